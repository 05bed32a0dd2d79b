//! The one escaping rule for user-controlled strings (file and branch names, config values,
//! commit messages, anything from a repository, a pull request or a client) on their way to a
//! log line, a terminal, a workflow command, a step output or Markdown.
//!
//! - [`for_log`] for stdout, stderr and `tracing`: control characters (CR and LF above all, which
//!   would start a new line the Actions runner reads as `::command::`), ESC (terminal escapes) and
//!   invisible or direction-changing format characters become visible escapes, and a string that
//!   would itself begin with `::` has its first colon escaped.
//! - [`md_text`] for Markdown text and table cells (summaries, PR comments): [`for_log`], then
//!   every Markdown/HTML special character backslash-escaped, so a name cannot open a heading, a
//!   link, an HTML comment or a new table cell.
//! - [`md_code`] for a name shown as code: a complete code span whose fence is longer than any
//!   run of backticks inside, so the name cannot close it.
//!
//! Payloads of workflow commands additionally go through `github::actions::escape_data`; this
//! module does not replace that percent-encoding, it makes the text safe to show.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Characters that would change what a reader or the runner sees without being visible.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200B}'..='\u{200F}' // zero-width spaces and joiners, LRM/RLM
            | '\u{2028}' | '\u{2029}' // line and paragraph separators
            | '\u{202A}'..='\u{202E}' // bidi embeddings and overrides
            | '\u{2060}'..='\u{2069}' // word joiner, invisible operators, bidi isolates
            | '\u{FEFF}' // byte-order mark
        )
}

/// A string safe to print on one line: see the module docs.
pub fn for_log(s: &str) -> Cow<'_, str> {
    let leading_command = s.trim_start().starts_with("::");
    if !leading_command && !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    let mut colon_pending = leading_command;
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            ':' if colon_pending => {
                out.push_str("\\u{3a}");
                colon_pending = false;
            }
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Markdown text (also valid inside a table cell): see the module docs.
pub fn md_text(s: &str) -> String {
    let safe = for_log(s);
    let mut out = String::with_capacity(safe.len() + 8);
    for c in safe.chars() {
        if matches!(
            c,
            '\\' | '`'
                | '*'
                | '_'
                | '{'
                | '}'
                | '['
                | ']'
                | '('
                | ')'
                | '<'
                | '>'
                | '#'
                | '+'
                | '-'
                | '='
                | '|'
                | '!'
                | '~'
                | '&'
                | '@'
                | '$'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A complete Markdown code span showing `s`, safe in running text and in a table cell (a `|` is
/// written `\|`, which GitHub's table parser turns back into `|`).
pub fn md_code(s: &str) -> String {
    if s.is_empty() {
        return "` `".into();
    }
    let safe = for_log(s).replace('|', "\\|");
    let longest_run = safe.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest_run + 1);
    // CommonMark strips one space on each side, so padding keeps a leading or trailing backtick
    // from merging with the fence.
    let pad = if safe.starts_with('`') || safe.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{safe}{pad}{fence}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_strings_are_borrowed() {
        assert!(matches!(
            for_log("data/images/meter 01.jpg"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn newlines_cannot_start_a_workflow_command() {
        let evil = "a.png\n::warning::pwned\r::add-mask::x";
        let safe = for_log(evil);
        assert_eq!(safe, "a.png\\n::warning::pwned\\r::add-mask::x");
        assert_eq!(safe.lines().count(), 1);
    }

    #[test]
    fn a_leading_command_is_neutralised() {
        assert_eq!(for_log("::add-mask::x"), "\\u{3a}:add-mask::x");
        assert_eq!(for_log("  ::error::x"), "  \\u{3a}:error::x");
        assert!(!for_log("::stop-commands::t").starts_with("::"));
    }

    #[test]
    fn terminal_and_bidi_controls_are_visible() {
        assert_eq!(for_log("\u{1b}[31mred"), "\\u{1b}[31mred");
        assert_eq!(for_log("abc\u{202E}gpj.exe"), "abc\\u{202e}gpj.exe");
        assert_eq!(for_log("a\u{7f}b\u{85}"), "a\\u{7f}b\\u{85}");
    }

    #[test]
    fn markdown_specials_are_escaped() {
        assert_eq!(md_text("# title"), "\\# title");
        assert_eq!(md_text("a|b"), "a\\|b");
        assert_eq!(
            md_text("<!-- wms-report:m -->"),
            "\\<\\!\\-\\- wms\\-report:m \\-\\-\\>"
        );
        assert_eq!(md_text("x\n## injected"), "x\\\\n\\#\\# injected");
        assert_eq!(md_text("[a](http://e)"), "\\[a\\]\\(http://e\\)");
    }

    #[test]
    fn code_spans_cannot_be_closed_from_inside() {
        assert_eq!(md_code("a.png"), "`a.png`");
        assert_eq!(md_code("a`b"), "``a`b``");
        assert_eq!(md_code("``x"), "``` ``x ```");
        assert_eq!(md_code("a|b"), "`a\\|b`");
        assert_eq!(md_code(""), "` `");
        assert_eq!(md_code("x\n# h"), "`x\\n# h`");
    }
}
