//! The search syntax users get, and its cost bound.
//!
//! A query is a list of parts separated by spaces, every one of which must
//! match (or, with a leading `-`, must not):
//!
//! - a word: `kafka` (matched in titles, bodies and tags, stemmed);
//! - a phrase: `"event sourcing"` (the words in that order);
//! - a field: `title:kafka`, `body:"exactly once"`, `tag:rust`, `author:ada`;
//! - an exclusion: `-draft`, `-"big data"`, `-tag:java`.
//!
//! Nothing else is syntax: wildcards, fuzzy or proximity operators, boosts,
//! ranges, grouping and boolean keywords are refused with a message naming
//! them, so no query can ask for a scan of the whole index. At most
//! [`MAX_PARTS`] parts and [`MAX_PHRASE_WORDS`] words per phrase.

use tantivy::Term;
use tantivy::query::{BooleanQuery, BoostQuery, Occur, PhraseQuery, Query, TermQuery};
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::tokenizer::TextAnalyzer;

use chronicle_schema::search_schema::PostIndexSchema;

pub const MAX_QUERY_CHARS: usize = 500;
pub const MAX_PARTS: usize = 16;
pub const MAX_PHRASE_WORDS: usize = 12;
const TITLE_BOOST: f32 = 3.0;
const TAGS_BOOST: f32 = 2.0;

/// Where a part is looked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Titles, bodies and tags (prose).
    Text,
    Title,
    Body,
    /// One exact tag.
    Tag,
    /// One exact author handle.
    Author,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    pub excluded: bool,
    pub target: Target,
    /// Raw text: a word, or a phrase's content.
    pub text: String,
    pub phrase: bool,
}

/// A query the user typed, parsed; or why it is refused.
pub fn parse(input: &str) -> Result<Vec<Part>, String> {
    let input = input.trim();
    if input.is_empty() {
        return Err("the query is empty".into());
    }
    if input.chars().count() > MAX_QUERY_CHARS {
        return Err(format!(
            "the query is longer than {MAX_QUERY_CHARS} characters"
        ));
    }
    let mut parts = Vec::new();
    let mut rest = input;
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        let (part, after) = next_part(rest)?;
        parts.push(part);
        rest = after;
    }
    if parts.len() > MAX_PARTS {
        return Err(format!(
            "the query has {} parts; at most {MAX_PARTS} are searched at once",
            parts.len()
        ));
    }
    if parts.iter().all(|part| part.excluded) {
        return Err("the query only excludes words; add a word to look for".into());
    }
    Ok(parts)
}

/// One part at the start of `input` (no leading space), and what follows it.
fn next_part(input: &str) -> Result<(Part, &str), String> {
    let (excluded, input) = match input.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, input.strip_prefix('+').unwrap_or(input)),
    };
    let (target, input) = field_prefix(input)?;
    if let Some(quoted) = input.strip_prefix('"') {
        let end = quoted
            .find('"')
            .ok_or("a phrase is not closed: end it with \"")?;
        let part = Part {
            excluded,
            target,
            text: quoted[..end].to_owned(),
            phrase: true,
        };
        let after = &quoted[end + 1..];
        if after.starts_with('~') {
            return Err("proximity searches (\"…\"~N) are not supported".into());
        }
        return Ok((part, after));
    }
    let end = input.find(char::is_whitespace).unwrap_or(input.len());
    let word = &input[..end];
    refuse_operators(word)?;
    if word.is_empty() {
        return Err("a - or a field name must be followed by a word".into());
    }
    let part = Part {
        excluded,
        target,
        text: word.to_owned(),
        phrase: false,
    };
    Ok((part, &input[end..]))
}

/// `title:`, `body:`, `tag:`/`tags:`, `author:`; anything else that looks
/// like a field name is refused (quote text that has a colon in it).
fn field_prefix(input: &str) -> Result<(Target, &str), String> {
    let Some((name, rest)) = input.split_once(':') else {
        return Ok((Target::Text, input));
    };
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphabetic()) {
        return Ok((Target::Text, input));
    }
    let target = match name.to_ascii_lowercase().as_str() {
        "title" => Target::Title,
        "body" => Target::Body,
        "tag" | "tags" => Target::Tag,
        "author" => Target::Author,
        _ => {
            return Err(format!(
                "there is no field \"{name}\" to search; use title:, body:, tag: or author: \
                 (or quote text that has a colon)"
            ));
        }
    };
    Ok((target, rest))
}

fn refuse_operators(word: &str) -> Result<(), String> {
    if matches!(word, "AND" | "OR" | "NOT" | "&&" | "||") {
        return Err(format!(
            "boolean operators ({word}) are not supported: every word must match; exclude a word with -word"
        ));
    }
    if word.len() > 1 && word.starts_with('/') && word.ends_with('/') {
        return Err("regular expressions (/…/) are not supported".into());
    }
    let refused = [
        ('*', "wildcards (*)"),
        ('~', "fuzzy and proximity searches (~)"),
        ('^', "boosts (^)"),
        ('[', "ranges ([…])"),
        (']', "ranges ([…])"),
        ('{', "ranges ({…})"),
        ('}', "ranges ({…})"),
        ('(', "grouping with parentheses"),
        (')', "grouping with parentheses"),
        ('"', "quotes inside a word"),
    ];
    match refused.iter().find(|(c, _)| word.contains(*c)) {
        Some((_, what)) => Err(format!(
            "{what} are not supported; quote the text to search for it literally"
        )),
        None => Ok(()),
    }
}

/// The tantivy query for parsed parts. Prose is tokenized as the index
/// tokenized it; a part whose text has no words (punctuation only) is left out.
pub fn build(
    parts: &[Part],
    schema: &PostIndexSchema,
    analyzer: &mut TextAnalyzer,
) -> Result<Box<dyn Query>, String> {
    let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
    for part in parts {
        let Some(query) = part_query(part, schema, analyzer)? else {
            continue;
        };
        let occur = if part.excluded {
            Occur::MustNot
        } else {
            Occur::Must
        };
        clauses.push((occur, query));
    }
    if !clauses.iter().any(|(occur, _)| *occur == Occur::Must) {
        return Err("the query has no words to look for".into());
    }
    Ok(Box::new(BooleanQuery::new(clauses)))
}

fn part_query(
    part: &Part,
    schema: &PostIndexSchema,
    analyzer: &mut TextAnalyzer,
) -> Result<Option<Box<dyn Query>>, String> {
    let exact = |field: Field| -> Option<Box<dyn Query>> {
        let value = part.text.trim().to_lowercase();
        (!value.is_empty()).then(|| -> Box<dyn Query> {
            Box::new(TermQuery::new(
                Term::from_field_text(field, &value),
                IndexRecordOption::Basic,
            ))
        })
    };
    let fields: &[(Field, f32)] = match part.target {
        Target::Tag => return Ok(exact(schema.tag)),
        Target::Author => return Ok(exact(schema.author_handle)),
        Target::Text => &[
            (schema.title, TITLE_BOOST),
            (schema.body, 1.0),
            (schema.tags_text, TAGS_BOOST),
        ],
        Target::Title => &[(schema.title, 1.0)],
        Target::Body => &[(schema.body, 1.0)],
    };
    let words = tokens(analyzer, &part.text);
    if words.len() > MAX_PHRASE_WORDS {
        return Err(format!(
            "a phrase has {} words; at most {MAX_PHRASE_WORDS} are matched in order",
            words.len()
        ));
    }
    if words.is_empty() {
        return Ok(None);
    }
    let per_field: Vec<(Occur, Box<dyn Query>)> = fields
        .iter()
        .map(|&(field, boost)| {
            let query: Box<dyn Query> = if words.len() == 1 {
                Box::new(TermQuery::new(
                    Term::from_field_text(field, &words[0]),
                    IndexRecordOption::WithFreqs,
                ))
            } else {
                Box::new(PhraseQuery::new(
                    words
                        .iter()
                        .map(|word| Term::from_field_text(field, word))
                        .collect(),
                ))
            };
            let query: Box<dyn Query> = if boost == 1.0 {
                query
            } else {
                Box::new(BoostQuery::new(query, boost))
            };
            (Occur::Should, query)
        })
        .collect();
    Ok(Some(if per_field.len() == 1 {
        per_field.into_iter().next().expect("one field").1
    } else {
        Box::new(BooleanQuery::new(per_field))
    }))
}

fn tokens(analyzer: &mut TextAnalyzer, text: &str) -> Vec<String> {
    let mut stream = analyzer.token_stream(text);
    let mut words = Vec::new();
    while stream.advance() {
        words.push(stream.token().text.clone());
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(query: &str) -> String {
        parse(query).expect_err(query)
    }

    #[test]
    fn words_phrases_fields_and_exclusions_parse() {
        let parts =
            parse(r#"kafka "event sourcing" -java title:rust -tag:old author:ada"#).unwrap();
        assert_eq!(parts.len(), 6);
        assert_eq!(
            parts[1],
            Part {
                excluded: false,
                target: Target::Text,
                text: "event sourcing".into(),
                phrase: true
            }
        );
        assert!(parts[2].excluded);
        assert_eq!(parts[3].target, Target::Title);
        assert_eq!((parts[4].target, parts[4].excluded), (Target::Tag, true));
        assert_eq!(parts[5].target, Target::Author);
    }

    #[test]
    fn every_operator_that_could_scan_the_index_is_refused_by_name() {
        assert!(refused("*").contains("wildcards"));
        assert!(refused("body:*").contains("wildcards"));
        assert!(refused("title:[a TO zzzz]").contains("ranges"));
        assert!(refused(r#""a b"~4294967295"#).contains("proximity"));
        assert!(refused("kafka~2").contains("fuzzy"));
        assert!(refused("kafka^10").contains("boosts"));
        assert!(refused("(a b)").contains("grouping"));
        assert!(refused("a OR b").contains("boolean"));
        assert!(refused("secret:x").contains("no field \"secret\""));
        assert!(refused("\"open").contains("not closed"));
        assert!(refused("-a -b").contains("only excludes"));
        let many = vec!["w"; MAX_PARTS + 1].join(" ");
        assert!(refused(&many).contains("at most"));
    }

    #[test]
    fn text_with_a_colon_that_is_no_field_name_is_text() {
        let parts = parse("12:30").unwrap();
        assert_eq!(parts[0].target, Target::Text);
        let quoted = parse(r#""https://example.com""#).unwrap();
        assert!(quoted[0].phrase);
    }
}
