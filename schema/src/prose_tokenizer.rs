//! The prose tokenizer of the post index: tantivy's `en_stem` (simple
//! tokenizer, long words dropped, lower-cased, English Snowball stemmer), with
//! the stemmer's answers remembered per thread.
//!
//! Stemming was most of the time spent indexing and highlighting (a search
//! re-tokenizes each hit's body to mark the matches); prose repeats its words,
//! so a memo answers most tokens without running the algorithm. The tokens are
//! exactly those of `en_stem`, so indexes built with either read alike.

use std::cell::RefCell;

use foldhash::{HashMap, HashMapExt};
use tantivy::Index;
use tantivy::tokenizer::{
    LowerCaser, RemoveLongFilter, SimpleTokenizer, TextAnalyzer, Token, TokenFilter, TokenStream,
    Tokenizer,
};

use crate::search_schema::PROSE_TOKENIZER;

/// Words remembered per thread before the memo starts over (a few MiB).
const MEMO_WORDS: usize = 100_000;

thread_local! {
    static MEMO: RefCell<HashMap<String, String>> = RefCell::new(HashMap::new());
}

/// Registers the prose tokenizer on `index` (its writers, readers and query parsers).
pub fn register(index: &Index) {
    index.tokenizers().register(PROSE_TOKENIZER, analyzer());
}

pub fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser)
        .filter(MemoStemmer)
        .build()
}

#[derive(Clone, Copy, Debug, Default)]
pub struct MemoStemmer;

impl TokenFilter for MemoStemmer {
    type Tokenizer<T: Tokenizer> = MemoStemmerFilter<T>;

    fn transform<T: Tokenizer>(self, tokenizer: T) -> MemoStemmerFilter<T> {
        MemoStemmerFilter { inner: tokenizer }
    }
}

#[derive(Clone)]
pub struct MemoStemmerFilter<T> {
    inner: T,
}

impl<T: Tokenizer> Tokenizer for MemoStemmerFilter<T> {
    type TokenStream<'a> = MemoStemmerStream<T::TokenStream<'a>>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> Self::TokenStream<'a> {
        MemoStemmerStream {
            tail: self.inner.token_stream(text),
            stemmer: frostem::Stemmer::new(frostem::Algorithm::English),
        }
    }
}

pub struct MemoStemmerStream<T> {
    tail: T,
    stemmer: frostem::Stemmer,
}

impl<T: TokenStream> TokenStream for MemoStemmerStream<T> {
    fn advance(&mut self) -> bool {
        if !self.tail.advance() {
            return false;
        }
        let stemmer = &self.stemmer;
        let token = self.tail.token_mut();
        MEMO.with_borrow_mut(|memo| {
            if let Some(stem) = memo.get(token.text.as_str()) {
                token.text.clear();
                token.text.push_str(stem);
                return;
            }
            let stem = stemmer.stem(&token.text).into_owned();
            if memo.len() >= MEMO_WORDS {
                memo.clear();
            }
            let word = std::mem::replace(&mut token.text, stem.clone());
            memo.insert(word, stem);
        });
        true
    }

    fn token(&self) -> &Token {
        self.tail.token()
    }

    fn token_mut(&mut self) -> &mut Token {
        self.tail.token_mut()
    }
}

#[cfg(test)]
mod tests {
    use tantivy::tokenizer::TokenizerManager;

    use super::*;

    fn tokens(mut analyzer: TextAnalyzer, text: &str) -> Vec<(String, usize, usize, usize)> {
        let mut stream = analyzer.token_stream(text);
        let mut tokens = Vec::new();
        while let Some(token) = stream.next() {
            tokens.push((
                token.text.clone(),
                token.offset_from,
                token.offset_to,
                token.position,
            ));
        }
        tokens
    }

    #[test]
    fn the_tokens_are_exactly_those_of_en_stem_and_stay_so_when_remembered() {
        let text = "Running runners ran; the RUNNING of generalizations, généralement \
                    a pneumonoultramicroscopicsilicovolcanoconiosis-long word, running again.";
        let reference = TokenizerManager::default()
            .get("en_stem")
            .expect("tantivy registers en_stem");
        let expected = tokens(reference, text);
        assert_eq!(tokens(analyzer(), text), expected);
        // The second time every word comes from the memo.
        assert_eq!(tokens(analyzer(), text), expected);
    }
}
