//! Reading a search index directory directly, as a test's independent check.

use std::collections::HashMap;

use chronicle_schema::search_schema::{IndexLayout, PostIndexSchema};
use tantivy::collector::DocSetCollector;
use tantivy::query::AllQuery;
use tantivy::schema::Value;
use tantivy::{Index, TantivyDocument};
use uuid::Uuid;

/// Post id -> indexed version, from the live generation's last commit.
pub fn indexed_versions(layout: &IndexLayout) -> HashMap<Uuid, i32> {
    let Ok(Some(generation)) = layout.current() else {
        return HashMap::new();
    };
    let Ok(index) = Index::open_in_dir(layout.generation_dir(generation)) else {
        return HashMap::new();
    };
    let schema = PostIndexSchema::build();
    let Ok(reader) = index.reader() else {
        return HashMap::new();
    };
    let searcher = reader.searcher();
    let addresses = searcher
        .search(&AllQuery, &DocSetCollector)
        .unwrap_or_default();
    addresses
        .into_iter()
        .filter_map(|address| {
            let document: TantivyDocument = searcher.doc(address).ok()?;
            let id = document.get_first(schema.id)?.as_str()?.parse().ok()?;
            let version = document.get_first(schema.version)?.as_u64()?;
            Some((id, i32::try_from(version).ok()?))
        })
        .collect()
}

/// Every document of one generation, as sorted stored-field text per post.
pub fn documents(
    layout: &IndexLayout,
    generation: u64,
) -> std::collections::BTreeMap<Uuid, String> {
    use tantivy::schema::OwnedValue;
    let index =
        Index::open_in_dir(layout.generation_dir(generation)).expect("open the index generation");
    let schema = PostIndexSchema::build();
    let searcher = index.reader().expect("a reader").searcher();
    let addresses = searcher
        .search(&AllQuery, &DocSetCollector)
        .expect("list documents");
    addresses
        .into_iter()
        .map(|address| {
            let document: TantivyDocument = searcher.doc(address).expect("a stored document");
            let mut fields: Vec<String> = document
                .field_values()
                .map(|(field, value)| {
                    let value: OwnedValue = value.as_value().into();
                    format!("{}={value:?}", schema.schema.get_field_name(field))
                })
                .collect();
            fields.sort();
            let id = document
                .get_first(schema.id)
                .and_then(|value| value.as_str())
                .unwrap()
                .parse()
                .unwrap();
            (id, fields.join("\u{1f}"))
        })
        .collect()
}

/// Post id -> every indexed version (more than one means a stale duplicate).
pub fn all_versions(layout: &IndexLayout) -> HashMap<Uuid, Vec<i32>> {
    let mut versions: HashMap<Uuid, Vec<i32>> = HashMap::new();
    let Ok(Some(generation)) = layout.current() else {
        return versions;
    };
    let index = Index::open_in_dir(layout.generation_dir(generation)).unwrap();
    let schema = PostIndexSchema::build();
    let searcher = index.reader().unwrap().searcher();
    for address in searcher.search(&AllQuery, &DocSetCollector).unwrap() {
        let document: TantivyDocument = searcher.doc(address).unwrap();
        let id = document
            .get_first(schema.id)
            .unwrap()
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let version = document
            .get_first(schema.version)
            .unwrap()
            .as_u64()
            .unwrap() as i32;
        versions.entry(id).or_default().push(version);
    }
    versions
}

/// The terms of `text` (as the index's analyzers cut it) that any segment
/// of the live generation still holds in its term dictionary, deleted
/// documents' included: what an index's files still say, not what it finds.
pub fn terms_held(layout: &IndexLayout, text: &str) -> Vec<String> {
    use tantivy::Term;
    use tantivy::tokenizer::TokenStream;
    let Ok(Some(generation)) = layout.current() else {
        return Vec::new();
    };
    let index =
        Index::open_in_dir(layout.generation_dir(generation)).expect("open the index generation");
    chronicle_schema::prose_tokenizer::register(&index);
    let schema = PostIndexSchema::build();
    let searcher = index.reader().expect("a reader").searcher();
    let mut held = Vec::new();
    let fields = [
        schema.slug,
        schema.title,
        schema.body,
        schema.tag,
        schema.tags_text,
        schema.author_handle,
    ];
    for field in fields {
        let mut tokenizer = index
            .tokenizer_for_field(field)
            .expect("the field's tokenizer");
        let mut stream = tokenizer.token_stream(text);
        while let Some(token) = stream.next() {
            let term = Term::from_field_text(field, &token.text);
            for segment in searcher.segment_readers() {
                let inverted = segment.inverted_index(field).expect("the field's postings");
                if inverted
                    .get_term_info(&term)
                    .expect("the term dictionary")
                    .is_some()
                {
                    held.push(format!(
                        "{}:{}",
                        schema.schema.get_field_name(field),
                        token.text
                    ));
                }
            }
        }
    }
    held
}
