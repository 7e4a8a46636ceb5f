//! The keys a template can render, as a language, and the questions rule validation
//! asks of it: can one template render one key from two different sets of values
//! ([`Language::ambiguous_key`]), can two templates render a common key
//! ([`Language::common_key`]), can they render one key for two different streams
//! ([`Language::key_of_two_streams`]), and can a template reach a reserved folder.
//!
//! A template is read as a sequence of pieces: literal text, or a variable with the
//! characters its values can have (`crate::names`): a stream name is
//! `[A-Za-z0-9][A-Za-z0-9._-]*` without `..`; an app name is such segments joined by
//! `~` (how `{AppName}` renders `/`); a domain is `[a-z0-9:][a-z0-9.:-]*` without `..`
//! and not ending in `.`; `{UnixTimestamp}` and `{Sequence}` are decimal numbers without
//! a leading zero. Each piece is a small deterministic automaton over bytes, and a
//! template is their concatenation: an automaton whose runs on a key are exactly the
//! ways of cutting the key into the pieces' values. Questions are answered on products
//! of two such automata, searched breadth-first, so a "yes" comes with the shortest
//! example key. The classes leave out the length limit and treat the repeats of a
//! variable as independent, so they describe a superset of what can be rendered: a
//! "no" is a proof, and a "yes" is refused even in the rare case where its example
//! could not really be rendered.
//!
//! Identity: a key belongs to an (app, stream) pair, and to a domain only when the
//! template renders `{Domain}` (a domainless template renders one stream's keys for
//! every domain: the live registry keeps two such publishes from being live at once).

use std::collections::HashMap;
use std::hash::Hash;

use super::template::{render_app, Part, Template, Var};

/// What the context of a template fixes: a rule for domain `a.com` and app `live`
/// renders `{Domain}` only as `a.com` and `{AppName}` only as `live`; a live publish
/// fixes all three. `None` stands for every valid name.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scope<'a> {
    pub domain: Option<&'a str>,
    pub app: Option<&'a str>,
    pub stream: Option<&'a str>,
}

/// The characters a variable's values can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Domain,
    App,
    Stream,
    Number,
    /// Any non-empty text (the rest of a key under a reserved prefix).
    Any,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Lit(Vec<u8>),
    Class(Class),
}

fn name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')
}

fn domain_char(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.' | b':')
}

impl Piece {
    /// The state after byte `b` from state `s` (0 is the start), if any. Every piece is
    /// deterministic, so that runs of a template correspond to ways of cutting a key.
    fn step(&self, s: u16, b: u8) -> Option<u16> {
        match self {
            Piece::Lit(l) => (l.get(s as usize) == Some(&b)).then_some(s + 1),
            // Names: 0 start of a segment, 1 inside, 2 just after a '.'.
            Piece::Class(Class::Stream | Class::App) => {
                let app = *self == Piece::Class(Class::App);
                match s {
                    0 if b.is_ascii_alphanumeric() => Some(1),
                    1 | 2 if b == b'.' => (s == 1).then_some(2),
                    1 | 2 if name_char(b) => Some(1),
                    1 | 2 if app && b == b'~' => Some(0),
                    _ => None,
                }
            }
            // Domains: 0 start, 1 inside, 2 just after a '.' (not an end).
            Piece::Class(Class::Domain) => match s {
                0 if domain_char(b) && b != b'-' && b != b'.' => Some(1),
                1 | 2 if b == b'.' => (s == 1).then_some(2),
                1 | 2 if domain_char(b) => Some(1),
                _ => None,
            },
            // Numbers: 0 start, 1 after a lone "0", 2 inside a number from 1 up.
            Piece::Class(Class::Number) => match s {
                0 if b == b'0' => Some(1),
                0 if b.is_ascii_digit() => Some(2),
                2 if b.is_ascii_digit() => Some(2),
                _ => None,
            },
            Piece::Class(Class::Any) => Some(1),
        }
    }

    fn accepts(&self, s: u16) -> bool {
        match self {
            Piece::Lit(l) => s as usize == l.len(),
            Piece::Class(Class::Domain) => s == 1,
            Piece::Class(_) => s != 0,
        }
    }

    /// Number of states (0 included).
    fn states(&self) -> u16 {
        match self {
            Piece::Lit(l) => l.len() as u16 + 1,
            Piece::Class(Class::Any) => 2,
            Piece::Class(_) => 3,
        }
    }
}

/// The identity parts a key can tell: domain, app, stream.
const ROLES: [Var; 3] = [Var::Domain, Var::AppName, Var::StreamName];

/// How a template tells one identity part.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ident {
    /// The scope fixes it to this (rendered) value.
    Fixed(Vec<u8>),
    /// The first piece that renders it.
    Segment(usize),
    /// The template does not render it and nothing fixes it: keys do not tell it.
    /// For the domain this means "not part of the identity"; an app or stream that is
    /// not told means that two different streams render the same keys.
    Untold,
}

/// The language of the keys one template renders in one scope.
#[derive(Debug, Clone)]
pub struct Language {
    /// Outgoing transitions of each state, sorted by [`rank`]. State 0 is the start.
    trans: Vec<Vec<(u8, u32)>>,
    /// The piece each state is in (`usize::MAX` for the start).
    piece_of: Vec<usize>,
    accepting: Vec<bool>,
    ident: [Ident; 3],
}

impl Language {
    /// The keys `t` renders when the values not fixed by `scope` range over every
    /// valid name and number.
    pub fn of(t: &Template, scope: Scope<'_>) -> Language {
        let fixed = |v: Var| -> Option<Vec<u8>> {
            match v {
                Var::Domain => scope.domain.map(|d| d.as_bytes().to_vec()),
                Var::AppName => scope.app.map(|a| render_app(a).as_bytes().to_vec()),
                Var::StreamName => scope.stream.map(|s| s.as_bytes().to_vec()),
                _ => None,
            }
        };
        let mut pieces: Vec<Piece> = Vec::new();
        let mut ident = [Ident::Untold, Ident::Untold, Ident::Untold];
        for (i, role) in ROLES.iter().enumerate() {
            // An app or stream fixed by the scope is known even when not rendered; a
            // domain is part of the identity only when rendered.
            if *role != Var::Domain {
                if let Some(v) = fixed(*role) {
                    ident[i] = Ident::Fixed(v);
                }
            }
        }
        let push_lit = |pieces: &mut Vec<Piece>, bytes: &[u8]| {
            if let Some(Piece::Lit(l)) = pieces.last_mut() {
                l.extend_from_slice(bytes);
            } else {
                pieces.push(Piece::Lit(bytes.to_vec()));
            }
        };
        for part in t.parts() {
            match part {
                Part::Lit(s) => push_lit(&mut pieces, s.as_bytes()),
                Part::Var(v) => {
                    let role = ROLES.iter().position(|r| r == v);
                    if let Some(value) = fixed(*v) {
                        if let Some(r) = role {
                            ident[r] = Ident::Fixed(value.clone());
                        }
                        push_lit(&mut pieces, &value);
                        continue;
                    }
                    if let Some(r) = role {
                        if ident[r] == Ident::Untold {
                            ident[r] = Ident::Segment(pieces.len());
                        }
                    }
                    pieces.push(Piece::Class(match v {
                        Var::Domain => Class::Domain,
                        Var::AppName => Class::App,
                        Var::StreamName => Class::Stream,
                        Var::UnixTimestamp | Var::Sequence => Class::Number,
                    }));
                }
            }
        }
        Language::build(pieces, ident)
    }

    /// Every key that starts with `prefix` (and has something after it).
    pub fn prefix(prefix: &str) -> Language {
        Language::build(
            vec![
                Piece::Lit(prefix.as_bytes().to_vec()),
                Piece::Class(Class::Any),
            ],
            [Ident::Untold, Ident::Untold, Ident::Untold],
        )
    }

    fn build(pieces: Vec<Piece>, ident: [Ident; 3]) -> Language {
        // State numbering: 0 is the start, then (piece i, state s ≥ 1) in order.
        let mut offset = Vec::with_capacity(pieces.len());
        let mut n = 1u32;
        for p in &pieces {
            offset.push(n);
            n += u32::from(p.states()) - 1;
        }
        let id = |i: usize, s: u16| offset[i] + u32::from(s) - 1;
        let mut trans = vec![Vec::new(); n as usize];
        let mut piece_of = vec![usize::MAX; n as usize];
        let mut accepting = vec![false; n as usize];
        let last = pieces.len().wrapping_sub(1);
        for b in 0..=255u8 {
            if let Some(t) = pieces.first().and_then(|p| p.step(0, b)) {
                trans[0].push((b, id(0, t)));
            }
        }
        for (i, p) in pieces.iter().enumerate() {
            for s in 1..p.states() {
                let me = id(i, s) as usize;
                piece_of[me] = i;
                accepting[me] = i == last && p.accepts(s);
                for b in 0..=255u8 {
                    if let Some(t) = p.step(s, b) {
                        trans[me].push((b, id(i, t)));
                    }
                    if p.accepts(s) {
                        if let Some(t) = pieces.get(i + 1).and_then(|q| q.step(0, b)) {
                            trans[me].push((b, id(i + 1, t)));
                        }
                    }
                }
            }
        }
        for t in &mut trans {
            t.sort_by_key(|(b, s)| (rank(*b), *s));
        }
        Language {
            trans,
            piece_of,
            accepting,
            ident,
        }
    }

    /// Whether `key` is one of the keys.
    pub fn contains(&self, key: &str) -> bool {
        let mut now = vec![0u32];
        for &b in key.as_bytes() {
            let mut next: Vec<u32> = now
                .iter()
                .flat_map(|&s| self.trans[s as usize].iter())
                .filter(|(c, _)| *c == b)
                .map(|(_, t)| *t)
                .collect();
            next.sort_unstable();
            next.dedup();
            if next.is_empty() {
                return false;
            }
            now = next;
        }
        now.iter().any(|&s| self.accepting[s as usize])
    }

    /// A key this template renders from two different sets of values, if there is one
    /// (two different ways of cutting the key into the template's pieces).
    pub fn ambiguous_key(&self) -> Option<String> {
        search(
            self,
            self,
            false,
            |diverged, _, (a, b), _| diverged || a != b,
            |diverged| diverged,
        )
    }

    /// A key both languages contain, if there is one.
    pub fn common_key(&self, other: &Language) -> Option<String> {
        search(self, other, (), |_, _, _, _| (), |_| true)
    }

    /// A key both languages contain for two different streams, if there is one: the
    /// app or the stream the key tells differ (or may differ), or both templates render
    /// `{Domain}` and the domains differ. The same app and stream under two domains are
    /// one stream for templates that leave `{Domain}` out.
    pub fn key_of_two_streams(&self, other: &Language) -> Option<String> {
        let mut init = [Cmp::Before; 3];
        let mut plans = [Plan::Skip, Plan::Skip, Plan::Skip];
        for r in 0..3 {
            let (x, y) = (&self.ident[r], &other.ident[r]);
            plans[r] = match (x, y) {
                (Ident::Untold, _) | (_, Ident::Untold) if r == 0 => Plan::Skip,
                (Ident::Untold, _) | (_, Ident::Untold) => {
                    init[r] = Cmp::Diff;
                    Plan::Skip
                }
                (Ident::Fixed(a), Ident::Fixed(b)) => {
                    init[r] = if a == b { Cmp::Eq } else { Cmp::Diff };
                    Plan::Skip
                }
                (Ident::Fixed(v), Ident::Segment(p)) => Plan::FixedSeg(v.clone(), *p, false),
                (Ident::Segment(p), Ident::Fixed(v)) => Plan::FixedSeg(v.clone(), *p, true),
                (Ident::Segment(p), Ident::Segment(q)) => Plan::SegSeg(*p, *q),
            };
            if plans[r] == Plan::Skip && init[r] == Cmp::Before {
                init[r] = Cmp::Eq;
            }
        }
        let (pa, pb) = (&self.piece_of, &other.piece_of);
        search(
            self,
            other,
            init,
            |mut tags, (a0, b0), (a1, b1), byte| {
                for r in 0..3 {
                    tags[r] = plans[r].step(tags[r], [pa[a0], pa[a1]], [pb[b0], pb[b1]], byte);
                }
                tags
            },
            |tags| {
                (0..3)
                    .any(|r| matches!(plans[r].finish(tags[r]), Cmp::Diff | Cmp::Before | Cmp::In))
            },
        )
    }
}

/// Where a comparison of one identity part stands along a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Cmp {
    Before,
    /// Both segments started at the same byte and have not ended.
    In,
    /// The segment matches the first `n` bytes of the fixed value so far.
    Matched(u16),
    Eq,
    /// Different, or possibly different (segments that are not at the same place).
    Diff,
}

/// How one identity part is compared between two templates.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Plan {
    Skip,
    /// A fixed value against the segment at this piece of the first template (`true`)
    /// or the second (`false`).
    FixedSeg(Vec<u8>, usize, bool),
    /// Segments at these pieces: equal when they start and end at the same bytes.
    SegSeg(usize, usize),
}

impl Plan {
    /// The comparison after one byte; `a` and `b` are the pieces of each template
    /// before and after the byte.
    fn step(&self, c: Cmp, a: [usize; 2], b: [usize; 2], byte: u8) -> Cmp {
        match self {
            Plan::Skip => c,
            Plan::SegSeg(p, q) => {
                let (in_a, in_b) = (a[1] == *p, b[1] == *q);
                match c {
                    Cmp::Before => {
                        let (start_a, start_b) = (in_a && a[0] != *p, in_b && b[0] != *q);
                        match (start_a, start_b) {
                            (true, true) => Cmp::In,
                            (false, false) => Cmp::Before,
                            _ => Cmp::Diff,
                        }
                    }
                    Cmp::In => match (in_a, in_b) {
                        (true, true) => Cmp::In,
                        (false, false) => Cmp::Eq,
                        _ => Cmp::Diff,
                    },
                    done => done,
                }
            }
            Plan::FixedSeg(v, p, first) => {
                let (before, after) = if *first { (a[0], a[1]) } else { (b[0], b[1]) };
                let inside = after == *p;
                let next = |n: u16| {
                    if v.get(n as usize) == Some(&byte) {
                        Cmp::Matched(n + 1)
                    } else {
                        Cmp::Diff
                    }
                };
                match c {
                    Cmp::Before if inside && before != *p => next(0),
                    Cmp::Matched(n) if inside => next(n),
                    Cmp::Matched(n) => self.finish(Cmp::Matched(n)),
                    done => done,
                }
            }
        }
    }

    /// The comparison at the end of the key.
    fn finish(&self, c: Cmp) -> Cmp {
        match (self, c) {
            (_, Cmp::In) => Cmp::Eq,
            (Plan::FixedSeg(v, ..), Cmp::Matched(n)) if n as usize == v.len() => Cmp::Eq,
            (_, Cmp::Matched(_)) => Cmp::Diff,
            (_, c) => c,
        }
    }
}

/// The order in which bytes are tried: lower-case letters, then digits, then the rest,
/// so that example keys read like names ("a/a/0.jpg" rather than "0/0/0.jpg").
fn rank(b: u8) -> (u8, u8) {
    let class = if b.is_ascii_lowercase() {
        0
    } else if b.is_ascii_digit() {
        1
    } else {
        2
    };
    (class, b)
}

/// Breadth-first search of the product of `a` and `b` (both read the same key), with a
/// tag carried along by `step(tag, from, to, byte)`; returns the shortest key that
/// ends in accepting states of both with `accept(tag)`.
fn search<T: Copy + Eq + Hash>(
    a: &Language,
    b: &Language,
    init: T,
    step: impl Fn(T, (usize, usize), (usize, usize), u8) -> T,
    accept: impl Fn(T) -> bool,
) -> Option<String> {
    type Node<T> = (u32, u32, T);
    let mut seen: HashMap<Node<T>, usize> = HashMap::new();
    // (node, parent index, byte that led here)
    let mut nodes: Vec<(Node<T>, usize, u8)> = vec![((0, 0, init), usize::MAX, 0)];
    seen.insert((0, 0, init), 0);
    let mut at = 0;
    while at < nodes.len() {
        let ((x, y, tag), _, _) = nodes[at];
        if a.accepting[x as usize] && b.accepting[y as usize] && accept(tag) {
            let mut key = Vec::new();
            let mut i = at;
            while i != 0 {
                key.push(nodes[i].2);
                i = nodes[i].1;
            }
            key.reverse();
            return Some(String::from_utf8_lossy(&key).into_owned());
        }
        let (tx, ty) = (&a.trans[x as usize], &b.trans[y as usize]);
        let (mut i, mut j) = (0, 0);
        while i < tx.len() && j < ty.len() {
            let (bx, by) = (tx[i].0, ty[j].0);
            let (rx, ry) = (rank(bx), rank(by));
            if rx < ry {
                i += 1;
                continue;
            }
            if ry < rx {
                j += 1;
                continue;
            }
            // Every pair of transitions on this byte.
            let j_end = j + ty[j..].iter().take_while(|t| t.0 == bx).count();
            while i < tx.len() && tx[i].0 == bx {
                for t in &ty[j..j_end] {
                    let (x1, y1) = (tx[i].1, t.1);
                    let tag1 = step(
                        tag,
                        (x as usize, y as usize),
                        (x1 as usize, y1 as usize),
                        bx,
                    );
                    let node = (x1, y1, tag1);
                    if let std::collections::hash_map::Entry::Vacant(e) = seen.entry(node) {
                        e.insert(nodes.len());
                        nodes.push((node, at, bx));
                    }
                }
                i += 1;
            }
            j = j_end;
        }
        at += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lang(t: &str) -> Language {
        Language::of(&Template::parse(t).unwrap(), Scope::default())
    }

    fn lang_in(t: &str, domain: Option<&str>, app: Option<&str>) -> Language {
        Language::of(
            &Template::parse(t).unwrap(),
            Scope {
                domain,
                app,
                stream: None,
            },
        )
    }

    #[test]
    fn membership_follows_the_names() {
        let l = lang("{AppName}/{StreamName}/{Sequence}.jpg");
        for key in ["live/cam1/0.jpg", "live~sub/c.d-e_f/123.jpg", "a/b/9.jpg"] {
            assert!(l.contains(key), "{key}");
        }
        for key in [
            "live/cam1/01.jpg",    // leading zero is never rendered
            "live/cam1/.jpg",      // empty number
            "live/.cam/1.jpg",     // a name starts with a letter or digit
            "live/ca..m/1.jpg",    // no ".." in a name
            "live/sub/cam1/1.jpg", // '/' of an app renders as '~'
            "live~/cam1/1.jpg",    // empty app segment
            "live/cam 1/1.jpg",
            "live/cam1/1.png",
        ] {
            assert!(!l.contains(key), "{key}");
        }
        let d = lang("{Domain}/{StreamName}.jpg");
        assert!(d.contains("a.example.com/x.jpg"));
        assert!(d.contains("::1/x.jpg"));
        assert!(!d.contains("A.example/x.jpg"), "domains are lower case");
        assert!(!d.contains("a./x.jpg"), "no trailing dot");
        assert!(!d.contains("-a/x.jpg"));
        let p = Language::prefix("_livesnap/");
        assert!(p.contains("_livesnap/x"));
        assert!(!p.contains("_livesnap"));
        assert!(!p.contains("x_livesnap/x"));
    }

    #[test]
    fn unambiguous_templates() {
        for t in [
            "{AppName}/{StreamName}.jpg",
            "{AppName}/{StreamName}/{UnixTimestamp}.jpg",
            "{AppName}/{StreamName}/{Sequence}.jpg",
            "{Domain}/{AppName}/{StreamName}/{UnixTimestamp}-{Sequence}.jpg",
            // '~' is the app's own separator, '/' and '-' end a number.
            "{AppName}~{StreamName}.jpg",
            "{StreamName}~{AppName}.jpg",
            "{StreamName}-{Sequence}.jpg",
            "{StreamName}.{Sequence}.jpg",
            "{StreamName}/{StreamName}.jpg",
            "snap/{StreamName}_{UnixTimestamp}.jpg",
        ] {
            assert_eq!(lang(t).ambiguous_key(), None, "{t}");
        }
    }

    #[test]
    fn ambiguous_templates_come_with_a_key() {
        for t in [
            // "cam12" is cam1 + 2 or cam + 12.
            "{StreamName}{Sequence}.jpg",
            // "a.b.c" splits at either dot.
            "{StreamName}.{AppName}.jpg",
            "{AppName}-{StreamName}.jpg",
            "{AppName}{StreamName}.jpg",
            "{Sequence}{UnixTimestamp}.jpg",
            "{Domain}.{StreamName}.jpg",
            "{StreamName}_{AppName}.jpg",
        ] {
            let key = lang(t)
                .ambiguous_key()
                .unwrap_or_else(|| panic!("{t} is ambiguous"));
            assert!(lang(t).contains(&key), "{t}: {key}");
        }
        assert_eq!(
            lang("{StreamName}{Sequence}.jpg")
                .ambiguous_key()
                .as_deref(),
            Some("a10.jpg")
        );
        // A rule for one app fixes {AppName}: then there is one way to cut.
        assert_eq!(
            lang_in("{AppName}{StreamName}.jpg", None, Some("live")).ambiguous_key(),
            None
        );
    }

    #[test]
    fn the_old_collision_is_gone() {
        // App "live/cam1", stream "1700000000" used to render its overwrite key at
        // "live/cam1/1700000000.jpg", a sequence key of app "live", stream "cam1".
        let ow = lang("{AppName}/{StreamName}.jpg");
        let seq = lang("{AppName}/{StreamName}/{UnixTimestamp}.jpg");
        assert_eq!(ow.common_key(&seq), None);
        assert!(!ow.contains("live/cam1/1700000000.jpg"));
        assert!(ow.contains("live~cam1/1700000000.jpg"));
        // Two templates that do meet.
        let seq2 = lang("{AppName}/{StreamName}/{Sequence}.jpg");
        assert_eq!(seq.common_key(&seq2).as_deref(), Some("a/a/0.jpg"));
        let flat = lang("{AppName}/{StreamName}{Sequence}.jpg");
        assert!(ow.common_key(&flat).is_some());
    }

    #[test]
    fn keys_of_two_streams() {
        // One rule for all apps, one for "live": "live/cam1.jpg" is the same stream
        // under both.
        let any = lang("{AppName}/{StreamName}.jpg");
        let live = lang_in("{AppName}/{StreamName}.jpg", None, Some("live"));
        assert!(any.common_key(&live).is_some());
        assert_eq!(any.key_of_two_streams(&live), None);
        assert_eq!(live.key_of_two_streams(&any), None);
        // ...also when the "live" rule writes its app as text.
        let lit = lang_in("live/{StreamName}.jpg", None, Some("live"));
        assert_eq!(any.key_of_two_streams(&lit), None);
        // ...but not when that text is another app's.
        let vod = lang_in("live/{StreamName}.jpg", None, Some("vod"));
        assert_eq!(any.key_of_two_streams(&vod).as_deref(), Some("live/a.jpg"));
        // A rule that leaves {AppName} out for every app: any two apps meet.
        let no_app = lang("x/{StreamName}.jpg");
        assert!(no_app.key_of_two_streams(&no_app).is_some());
        // Apps fixed by two rules: different apps never share a key.
        let a = lang_in("{AppName}/{StreamName}.jpg", None, Some("a"));
        let b = lang_in("{AppName}/{StreamName}.jpg", None, Some("b"));
        assert_eq!(a.common_key(&b), None);
        // A domain rendered by one template can be an app in another.
        let dom = lang_in("{Domain}/{StreamName}.jpg", None, Some("live"));
        assert_eq!(dom.key_of_two_streams(&any).as_deref(), Some("a/a.jpg"));
        // Domains count only when both templates render them.
        let d1 = lang_in("{Domain}/{AppName}/{StreamName}.jpg", Some("a.com"), None);
        let d2 = lang_in("{Domain}/{AppName}/{StreamName}.jpg", Some("b.com"), None);
        assert_eq!(d1.common_key(&d2), None);
        let d3 = lang("{Domain}/{AppName}/{StreamName}.jpg");
        assert!(d1.common_key(&d3).is_some());
        assert_eq!(d1.key_of_two_streams(&d3), None);
        let lit_dom = lang("a.com/{AppName}/{StreamName}.jpg");
        assert_eq!(d1.key_of_two_streams(&lit_dom), None);
        // Segments that do not line up: "a/b~c.jpg" is app a, stream "b~c"? No: a
        // stream has no '~'. But a dotted stream against a dotted app does.
        let s1 = lang_in("{AppName}.{StreamName}.jpg", None, Some("x"));
        let s2 = lang_in("{AppName}.{StreamName}.jpg", None, Some("x.y"));
        assert_eq!(s1.key_of_two_streams(&s2).as_deref(), Some("x.y.a.jpg"));
    }

    #[test]
    fn reserved_prefixes_are_reachable_only_by_spelling_them() {
        let reserved = Language::prefix("_livesnap/");
        assert_eq!(
            lang("{AppName}/{StreamName}.jpg").common_key(&reserved),
            None
        );
        // Names never start with '_', but a literal '_' in front of one does.
        assert_eq!(
            lang("_{StreamName}/{Sequence}.jpg")
                .common_key(&reserved)
                .as_deref(),
            Some("_livesnap/0.jpg")
        );
        assert!(lang("_livesnap/{StreamName}.jpg")
            .common_key(&reserved)
            .is_some());
        assert_eq!(
            lang("_livesnap{StreamName}/x.jpg").common_key(&reserved),
            None
        );
    }

    #[test]
    fn a_live_stream_fixes_every_name() {
        let t = Template::parse("{AppName}/{StreamName}/{Sequence}.jpg").unwrap();
        let scope = |d| Scope {
            domain: Some(d),
            app: Some("live/sub"),
            stream: Some("cam1"),
        };
        let a = Language::of(&t, scope("a.example"));
        let b = Language::of(&t, scope("b.example"));
        assert_eq!(a.common_key(&b).as_deref(), Some("live~sub/cam1/0.jpg"));
        let t = Template::parse("{Domain}/{AppName}/{StreamName}/{Sequence}.jpg").unwrap();
        let (a, b) = (
            Language::of(&t, scope("a.example")),
            Language::of(&t, scope("b.example")),
        );
        assert_eq!(a.common_key(&b), None);
    }
}
