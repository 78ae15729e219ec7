//! Post bodies are Markdown; excerpts and the search index want the prose.

use pulldown_cmark::{Event, Parser, TagEnd};

/// The text of a Markdown document, blocks separated by newlines.
pub fn plain_text(markdown: &str) -> String {
    let mut text = String::with_capacity(markdown.len());
    for event in Parser::new(markdown) {
        match event {
            Event::Text(chunk) | Event::Code(chunk) => text.push_str(&chunk),
            Event::SoftBreak | Event::HardBreak => text.push(' '),
            Event::End(
                TagEnd::Paragraph
                | TagEnd::Heading(_)
                | TagEnd::Item
                | TagEnd::CodeBlock
                | TagEnd::BlockQuote(_),
            ) => text.push('\n'),
            _ => {}
        }
    }
    text.trim().to_owned()
}

pub const EXCERPT_CHARS: usize = 280;

/// The first words of the prose, cut at a word boundary, with an ellipsis when cut.
pub fn excerpt(markdown: &str) -> String {
    let text = plain_text(markdown)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    if text.chars().count() <= EXCERPT_CHARS {
        return text;
    }
    let cut: String = text.chars().take(EXCERPT_CHARS).collect();
    let at_word = cut.rfind(' ').map_or(cut.as_str(), |space| &cut[..space]);
    format!("{}…", at_word.trim_end_matches([',', '.', ';', ':']))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_is_dropped_and_prose_kept() {
        let markdown =
            "# Title\n\nSome *emphasis* and a [link](http://x.y).\n\n```rust\nfn main() {}\n```";
        assert_eq!(
            plain_text(markdown),
            "Title\nSome emphasis and a link.\nfn main() {}"
        );
    }

    #[test]
    fn long_text_is_cut_at_a_word() {
        let long = "word ".repeat(100);
        let excerpt = excerpt(&long);
        assert!(excerpt.ends_with('…'));
        assert!(excerpt.chars().count() <= EXCERPT_CHARS + 1);
        assert!(!excerpt.contains("wor…"));
        assert_eq!(super::excerpt("Short."), "Short.");
    }
}
