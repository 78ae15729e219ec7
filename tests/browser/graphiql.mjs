// Drives GraphiQL in headless Chromium through the Chrome DevTools Protocol
// (over a pipe: no extra packages, any Node from 18): opens the page, types a
// query into the editor, clicks Run, and prints what the response pane shows,
// plus any request the page made off its origin and any CSP violation.
//
//   node graphiql.mjs <chromium> <page url> <query>
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [chromium, pageUrl, query] = process.argv.slice(2);
const profile = mkdtempSync(join(tmpdir(), 'chronicle-chromium-'));
const browser = spawn(chromium, [
  '--headless=new', '--no-sandbox', '--disable-gpu', '--no-first-run',
  '--disable-dev-shm-usage', `--user-data-dir=${profile}`,
  '--remote-debugging-pipe', 'about:blank',
], { stdio: ['ignore', 'ignore', 'ignore', 'pipe', 'pipe'] });

// Once the browser has exited (it writes to its profile until then).
const finish = (code) => {
  const done = () => {
    try { rmSync(profile, { recursive: true, force: true }); } catch { /* a temporary directory */ }
    process.exit(code);
  };
  if (browser.exitCode !== null || browser.signalCode !== null) return done();
  browser.once('exit', done);
  browser.kill('SIGKILL');
};
const fail = (message) => { console.log(JSON.stringify({ error: message })); finish(1); };
setTimeout(() => fail('timed out'), 60_000);
browser.on('error', (error) => fail(`cannot start ${chromium}: ${error.message}`));

let next = 0;
const pending = new Map();
const offOrigin = [];
const violations = [];
const origin = new URL(pageUrl).origin;
const handle = (message) => {
  if (message.id !== undefined && pending.has(message.id)) {
    pending.get(message.id)(message);
    pending.delete(message.id);
  } else if (message.method === 'Network.requestWillBeSent') {
    const url = message.params.request.url;
    if (!url.startsWith(origin) && !url.startsWith('data:') && !url.startsWith('about:')) offOrigin.push(url);
  } else if (message.method === 'Runtime.consoleAPICalled' || message.method === 'Log.entryAdded') {
    const text = JSON.stringify(message.params);
    if (text.includes('Content Security Policy')) violations.push(text.slice(0, 300));
  }
};
let buffer = '';
browser.stdio[4].on('data', (chunk) => {
  buffer += chunk;
  let end;
  while ((end = buffer.indexOf('\0')) >= 0) {
    handle(JSON.parse(buffer.slice(0, end)));
    buffer = buffer.slice(end + 1);
  }
});
let session;
const send = (method, params = {}) => new Promise((resolve) => {
  const id = ++next;
  pending.set(id, resolve);
  browser.stdio[3].write(JSON.stringify({ id, method, params, sessionId: session }) + '\0');
});
const targets = await send('Target.getTargets');
const page = targets.result.targetInfos.find((target) => target.type === 'page');
session = (await send('Target.attachToTarget', { targetId: page.targetId, flatten: true })).result.sessionId;
const evaluate = async (expression) => {
  const answer = await send('Runtime.evaluate', { expression, awaitPromise: true, returnByValue: true });
  return answer.result?.result?.value;
};
const until = async (expression) => {
  for (let tries = 0; tries < 200; tries++) {
    const value = await evaluate(expression);
    if (value) return value;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return null;
};

await send('Network.enable');
await send('Runtime.enable');
await send('Log.enable');
await send('Page.enable');
await send('Page.navigate', { url: pageUrl });
if (!await until(`!!document.querySelector('.graphiql-query-editor .CodeMirror')`)) {
  fail(`the editor never appeared: ${await evaluate('document.body.innerText.slice(0, 200)')}`);
}
await evaluate(`document.querySelector('.graphiql-query-editor .CodeMirror').CodeMirror.setValue(${JSON.stringify(query)})`);
await evaluate(`document.querySelector('.graphiql-execute-button').click()`);
const response = await until(`(() => {
  const pane = document.querySelector('.graphiql-response .CodeMirror');
  const text = pane && pane.CodeMirror.getValue();
  return text && text.includes('"data"') ? text : null;
})()`);
console.log(JSON.stringify({ response, offOrigin, violations }));
finish(response ? 0 : 1);
