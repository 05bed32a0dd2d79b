//! Path globs with the semantics dorny/paths-filter users already know: picomatch with
//! `dot: true`. Owns pattern parsing and matching only; which patterns apply to a filter, and in
//! what order, is `filters.rs`'s business.
//!
//! Rules (from picomatch's README, with `dot: true`):
//! - `*` matches any run of characters inside one path segment (never `/`), dotfiles included;
//! - `?` matches one character other than `/`;
//! - `**` alone in a segment matches zero or more whole segments (`a/**/b` matches `a/b`,
//!   `**/*.dvc` matches `x.dvc`, `src/**` matches `src` itself); elsewhere it acts as `*`;
//! - `[abc]`, `[a-z]`, `[!a]` / `[^a]` are character classes;
//! - `{a,b}` alternation, nestable (`{src,test}/**/*.{rs,py}`), and `{1..3}` numeric ranges;
//! - `\x` escapes `x`; a leading `./` is ignored; matching is case-sensitive.
//!
//! Negation (`!pattern`) is not a property of one glob here: filters apply `!` rules in order.

use std::fmt;

/// A compiled glob: the brace expansions of one pattern, each split into segments.
#[derive(Clone)]
pub struct Glob {
    source: String,
    alternatives: Vec<Vec<Segment>>,
}

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    /// `**`: zero or more whole segments.
    GlobStar,
    /// Any other segment, as tokens matched against one path segment.
    Tokens(Vec<Token>),
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Literal(char),
    /// `*`: any run of characters within the segment.
    Star,
    /// `?`: exactly one character.
    One,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// A pattern that cannot be compiled; the message says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid glob {pattern:?}: {reason}")]
pub struct GlobError {
    pub pattern: String,
    pub reason: String,
}

/// Brace expansion can blow up combinatorially (`{a,b}{c,d}…`); past this many alternatives the
/// pattern is refused rather than silently slow.
const MAX_ALTERNATIVES: usize = 4096;

impl Glob {
    pub fn new(pattern: &str) -> Result<Glob, GlobError> {
        let err = |reason: &str| GlobError {
            pattern: pattern.to_string(),
            reason: reason.to_string(),
        };
        if pattern.is_empty() {
            return Err(err("the pattern is empty"));
        }
        let mut trimmed = pattern;
        while let Some(rest) = trimmed.strip_prefix("./") {
            trimmed = rest;
        }
        let expanded = expand_braces(trimmed).map_err(|r| err(&r))?;
        let alternatives = expanded
            .iter()
            .map(|alt| compile(alt).map_err(|r| err(&r)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Glob {
            source: pattern.to_string(),
            alternatives,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether `path` (slash-separated, relative to the repository root) matches.
    pub fn is_match(&self, path: &str) -> bool {
        let path = path.strip_prefix("./").unwrap_or(path);
        let segments: Vec<&str> = path.split('/').collect();
        self.alternatives
            .iter()
            .any(|alt| match_segments(alt, &segments))
    }
}

impl fmt::Debug for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Glob({:?})", self.source)
    }
}

/// Expands `{a,b}` and `{1..3}` into the plain patterns they stand for. A `{` without a matching
/// `}` or without a top-level `,`/`..` is literal, as in picomatch.
fn expand_braces(pattern: &str) -> Result<Vec<String>, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let Some((open, close, parts)) = first_brace_group(&chars) else {
        return Ok(vec![pattern.to_string()]);
    };
    let prefix: String = chars[..open].iter().collect();
    let suffix: String = chars[close + 1..].iter().collect();
    let mut out = Vec::new();
    for part in parts {
        for tail in expand_braces(&format!("{prefix}{part}{suffix}"))? {
            out.push(tail);
            if out.len() > MAX_ALTERNATIVES {
                return Err(format!(
                    "braces expand to more than {MAX_ALTERNATIVES} patterns; split it into several rules"
                ));
            }
        }
    }
    Ok(out)
}

/// The first expandable `{…}` group: its bounds and its alternatives.
fn first_brace_group(chars: &[char]) -> Option<(usize, usize, Vec<String>)> {
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 2,
            '[' => i = class_end(chars, i).map_or(i + 1, |end| end + 1),
            '{' => {
                if let Some((close, parts)) = brace_parts(chars, i) {
                    return Some((i, close, parts));
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
    None
}

/// For a `{` at `open`: the index of its `}` and the alternatives, if it is a real group.
fn brace_parts(chars: &[char], open: usize) -> Option<(usize, Vec<String>)> {
    let mut depth = 0;
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut i = open + 1;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\\' if i + 1 < chars.len() => {
                current.push(c);
                current.push(chars[i + 1]);
                i += 2;
                continue;
            }
            '{' => depth += 1,
            '}' if depth == 0 => {
                parts.push(current);
                if parts.len() > 1 {
                    return Some((i, parts));
                }
                return numeric_range(&parts[0]).map(|range| (i, range));
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut current));
                i += 1;
                continue;
            }
            _ => {}
        }
        current.push(c);
        i += 1;
    }
    None
}

/// `1..3` → `["1", "2", "3"]` (either direction); anything else is not a range.
fn numeric_range(body: &str) -> Option<Vec<String>> {
    let (a, b) = body.split_once("..")?;
    let (a, b): (i64, i64) = (a.parse().ok()?, b.parse().ok()?);
    if a.abs_diff(b) as usize >= MAX_ALTERNATIVES {
        return None;
    }
    let values: Vec<String> = if a <= b {
        (a..=b).map(|v| v.to_string()).collect()
    } else {
        (b..=a).rev().map(|v| v.to_string()).collect()
    };
    Some(values)
}

/// Index of the `]` closing a class opened at `open`, if any.
fn class_end(chars: &[char], open: usize) -> Option<usize> {
    let mut i = open + 1;
    if i < chars.len() && (chars[i] == '!' || chars[i] == '^') {
        i += 1;
    }
    // A `]` right after the opening (or its negation) is a literal member.
    if i < chars.len() && chars[i] == ']' {
        i += 1;
    }
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 2,
            ']' => return Some(i),
            '/' => return None,
            _ => i += 1,
        }
    }
    None
}

fn compile(pattern: &str) -> Result<Vec<Segment>, String> {
    let mut segments = Vec::new();
    for raw in split_unescaped_slashes(pattern) {
        if raw == "**" {
            // `a/**/**/b` is the same as `a/**/b`; collapsing keeps matching linear.
            if segments.last() != Some(&Segment::GlobStar) {
                segments.push(Segment::GlobStar);
            }
            continue;
        }
        segments.push(Segment::Tokens(tokens(&raw)?));
    }
    Ok(segments)
}

fn split_unescaped_slashes(pattern: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let last = out.last_mut().expect("never empty");
                last.push(c);
                if let Some(n) = chars.next() {
                    last.push(n);
                }
            }
            '/' => out.push(String::new()),
            _ => out.last_mut().expect("never empty").push(c),
        }
    }
    out
}

fn tokens(segment: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = segment.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' => {
                let Some(&c) = chars.get(i + 1) else {
                    return Err("it ends with a lone `\\`".to_string());
                };
                out.push(Token::Literal(c));
                i += 2;
            }
            '*' => {
                // `**` inside a segment (`a**b`) is just a star; consecutive stars are one.
                if out.last() != Some(&Token::Star) {
                    out.push(Token::Star);
                }
                i += 1;
            }
            '?' => {
                out.push(Token::One);
                i += 1;
            }
            '[' => match class_end(&chars, i) {
                Some(end) => {
                    out.push(class(&chars[i + 1..end]));
                    i = end + 1;
                }
                None => {
                    out.push(Token::Literal('['));
                    i += 1;
                }
            },
            c => {
                out.push(Token::Literal(c));
                i += 1;
            }
        }
    }
    Ok(out)
}

fn class(body: &[char]) -> Token {
    let (negated, body) = match body.first() {
        Some('!') | Some('^') => (true, &body[1..]),
        _ => (false, body),
    };
    let mut ranges = Vec::new();
    let mut i = 0;
    while i < body.len() {
        let mut c = body[i];
        if c == '\\' && i + 1 < body.len() {
            i += 1;
            c = body[i];
        }
        if i + 2 < body.len() && body[i + 1] == '-' {
            ranges.push((c, body[i + 2]));
            i += 3;
        } else {
            ranges.push((c, c));
            i += 1;
        }
    }
    Token::Class { negated, ranges }
}

/// Matches pattern segments against path segments; `**` backtracks over whole segments.
fn match_segments(pattern: &[Segment], path: &[&str]) -> bool {
    let Some((first, rest)) = pattern.split_first() else {
        return path.is_empty();
    };
    match first {
        Segment::GlobStar => (0..=path.len()).any(|skip| match_segments(rest, &path[skip..])),
        Segment::Tokens(tokens) => match path.split_first() {
            Some((head, tail)) => {
                let head: Vec<char> = head.chars().collect();
                match_tokens(tokens, &head) && match_segments(rest, tail)
            }
            None => false,
        },
    }
}

/// Matches one segment; classic greedy star with a single backtrack point.
fn match_tokens(tokens: &[Token], text: &[char]) -> bool {
    let (mut t, mut s) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while s < text.len() {
        match tokens.get(t) {
            Some(Token::Star) => {
                star = Some((t, s));
                t += 1;
                continue;
            }
            Some(token) if token_matches(token, text[s]) => {
                t += 1;
                s += 1;
                continue;
            }
            _ => {}
        }
        match star {
            Some((st, ss)) => {
                t = st + 1;
                s = ss + 1;
                star = Some((st, ss + 1));
            }
            None => return false,
        }
    }
    tokens[t..].iter().all(|tok| *tok == Token::Star)
}

fn token_matches(token: &Token, c: char) -> bool {
    match token {
        Token::Literal(l) => *l == c,
        Token::One => true,
        Token::Star => true,
        Token::Class { negated, ranges } => {
            let inside = ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi);
            inside != *negated
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, path: &str) -> bool {
        Glob::new(pattern).unwrap().is_match(path)
    }

    #[test]
    fn star_stays_inside_a_segment_and_matches_dotfiles() {
        assert!(m("*.md", "README.md"));
        assert!(!m("*.md", "docs/README.md"));
        assert!(m("*", ".env"));
        assert!(m("src/*.rs", "src/.hidden.rs"));
        assert!(m("a*", "a"));
        assert!(!m("src/*", "src"));
    }

    #[test]
    fn globstar_matches_zero_or_more_segments() {
        assert!(m("**", "a/b/c.txt"));
        assert!(m("**/*.dvc", "images.dvc"));
        assert!(m("**/*.dvc", "data/training/images.dvc"));
        assert!(m("a/**/b", "a/b"));
        assert!(m("a/**/b", "a/x/y/b"));
        assert!(m("src/**", "src"));
        assert!(m("src/**", "src/deep/er/file"));
        assert!(!m("src/**", "srcs/file"));
        assert!(m(".github/**", ".github/workflows/ci.yml"));
        assert!(m("a**b", "axxb"));
        assert!(!m("a**b", "ax/xb"));
    }

    #[test]
    fn braces_classes_and_escapes() {
        assert!(m("{src,test}/**/*.{rs,py}", "test/x/y.py"));
        assert!(!m("{src,test}/**/*.{rs,py}", "docs/x.rs"));
        assert!(m("a/{b,{c,d}}/e", "a/d/e"));
        assert!(m("v{1..3}.txt", "v2.txt"));
        assert!(!m("v{1..3}.txt", "v4.txt"));
        assert!(m("file[0-9].txt", "file7.txt"));
        assert!(!m("file[!0-9].txt", "file7.txt"));
        assert!(m("file[^0-9].txt", "filex.txt"));
        assert!(m("\\*.txt", "*.txt"));
        assert!(!m("\\*.txt", "a.txt"));
        assert!(m("{a}", "{a}"), "a single-item group is literal");
        assert!(m("x{", "x{"));
        assert!(m("./src/*.rs", "src/main.rs"));
        assert!(m("?.txt", "a.txt"));
        assert!(!m("?.txt", "ab.txt"));
    }

    #[test]
    fn errors_name_the_pattern() {
        let e = Glob::new("").unwrap_err();
        assert!(e.to_string().contains("empty"), "{e}");
        let e = Glob::new("a\\").unwrap_err();
        assert!(e.to_string().contains("a\\\\"), "{e}");
        let e = Glob::new(&"{a,b}".repeat(13)).unwrap_err();
        assert!(e.reason.contains("split"), "{e}");
    }
}
