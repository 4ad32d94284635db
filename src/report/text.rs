//! Text from units made safe for reports: one cleaning function for every sink that
//! quotes a unit's output or messages (JUnit XML, GitHub annotations, the job summary).
//!
//! Removed: ANSI and other terminal escape sequences (CSI colours and cursor moves, OSC
//! titles and hyperlinks, with `strip-ansi-escapes`, the parser quick-junit uses too),
//! NUL and the other C0 control characters except tab and newline (a carriage return
//! before a newline goes, a lone one becomes a newline: progress bars redraw with it),
//! DEL and the C1 controls, and the non-characters U+FFFE and U+FFFF, which XML 1.0
//! cannot hold.

/// `text` without escape sequences and control characters (tab and newline stay).
pub fn clean(text: &str) -> String {
    // The escape parser drops tabs and carriage returns with the other controls: line
    // ends are settled and tabs kept apart before it runs.
    let lines = text.replace("\r\n", "\n").replace('\r', "\n");
    let stripped: Vec<String> = lines
        .split('\t')
        .map(strip_ansi_escapes::strip_str)
        .collect();
    stripped
        .join("\t")
        .chars()
        .filter(|c| {
            !matches!(c, '\u{0}'..='\u{8}' | '\u{b}'..='\u{1f}' | '\u{7f}'..='\u{9f}' | '\u{FFFE}' | '\u{FFFF}')
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_controls_are_removed() {
        let raw = "\u{1b}[31mred\u{1b}[0m \u{1b}]8;;http://x\u{7}link\u{1b}]8;;\u{1b}\\ \u{1b}]0;title\u{7}nul\0bell\u{7}del\u{7f}c1\u{9b}\u{FFFE}ok\r\nbar 1\rbar 2\ttab";
        assert_eq!(clean(raw), "red link nulbelldelc1ok\nbar 1\nbar 2\ttab");
    }

    #[test]
    fn plain_text_is_unchanged() {
        let text = "thread 'main' panicked at src/lib.rs:3:5:\n  ✓ ünïcödé";
        assert_eq!(clean(text), text);
    }
}
