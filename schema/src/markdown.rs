//! Post bodies are Markdown; excerpts and the search index want the prose.

use pulldown_cmark::{Event, Parser, TagEnd};

/// The text of a Markdown document, blocks separated by newlines.
pub fn plain_text(markdown: &str) -> String {
    let mut text = String::with_capacity(markdown.len());
    for chunk in prose(markdown) {
        text.push_str(&chunk);
    }
    text.trim().to_owned()
}

/// The prose of a Markdown document in order, as it is parsed.
fn prose(markdown: &str) -> impl Iterator<Item = pulldown_cmark::CowStr<'_>> {
    Parser::new(markdown).filter_map(|event| match event {
        Event::Text(chunk) | Event::Code(chunk) => Some(chunk),
        Event::SoftBreak | Event::HardBreak => Some(" ".into()),
        Event::End(
            TagEnd::Paragraph
            | TagEnd::Heading(_)
            | TagEnd::Item
            | TagEnd::CodeBlock
            | TagEnd::BlockQuote(_),
        ) => Some("\n".into()),
        _ => None,
    })
}

pub const EXCERPT_CHARS: usize = 280;

/// The first words of the prose, cut at a word boundary, with an ellipsis when cut.
pub fn excerpt(markdown: &str) -> String {
    // The prose with every run of whitespace made one space, read only as
    // far as the excerpt needs: a whole body parsed and joined was most of
    // the fold's time for a post.
    let mut text = String::new();
    let mut count = 0;
    let mut gap = false;
    'prose: for chunk in prose(markdown) {
        for character in chunk.chars() {
            if character.is_whitespace() {
                gap = !text.is_empty();
                continue;
            }
            if gap {
                text.push(' ');
                count += 1;
                gap = false;
            }
            text.push(character);
            count += 1;
            if count > EXCERPT_CHARS {
                break 'prose;
            }
        }
    }
    if count <= EXCERPT_CHARS {
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

    /// What `excerpt` computes, the long way: every word of the prose.
    fn excerpt_of_every_word(markdown: &str) -> String {
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

    #[test]
    fn the_excerpt_reads_only_as_far_as_it_needs_and_says_the_same() {
        let words = [
            "a",
            "mot",
            "wörter,",
            "x.",
            "long-word",
            "é",
            "\t",
            "  ",
            "\n\n",
            "**b**",
            "`c d`",
            "- item\n",
            "# H\n",
            "> q\n",
        ];
        for seed in 0..400u64 {
            let mut state = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let mut markdown = String::new();
            let length = (seed % 97) as usize * 3;
            for _ in 0..length {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                markdown.push_str(words[(state >> 33) as usize % words.len()]);
                if state & 1 == 0 {
                    markdown.push(' ');
                }
            }
            assert_eq!(
                excerpt(&markdown),
                excerpt_of_every_word(&markdown),
                "{markdown:?}"
            );
        }
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
