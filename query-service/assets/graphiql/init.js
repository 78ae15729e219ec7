// Starts GraphiQL against this server's /graphql (queries and mutations over
// HTTP, subscriptions over /graphql/ws), sending the browser's cookies only to
// this origin. A file, not an inline script: the page's CSP allows no inline code.
(function () {
  var http = new URL('/graphql', window.location.origin).toString();
  var ws = new URL('/graphql/ws', window.location.origin);
  ws.protocol = ws.protocol === 'https:' ? 'wss:' : 'ws:';
  var fetcher = GraphiQL.createFetcher({
    url: http,
    subscriptionUrl: ws.toString(),
    fetch: function (url, options) {
      return fetch(url, Object.assign({}, options, { credentials: 'same-origin' }));
    },
  });
  ReactDOM.createRoot(document.getElementById('graphiql')).render(
    React.createElement(GraphiQL, { fetcher: fetcher, defaultEditorToolsVisibility: true })
  );
})();
