//! The source layout rules of issue 12, held by a test because a reviewer cannot see them in a
//! diff: no file in `src/` over 600 lines, a `//!` header on every file (one concept per module,
//! saying what it owns), and no import cycle between modules — neither between top-level
//! modules nor among the children of one folder module — so that data flows one way.
//!
//! The import scan reads source text, not the compiler's view: any path starting with `crate::`,
//! `super::` or `self::` in code (comments and literals skipped, `use` trees flattened) is an
//! edge to the deepest module of `src/` it names. Unit-test modules count like any other code.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const MAX_LINES: usize = 600;

/// A module of `src/` as its path below the crate root: `["conn", "http1"]`; the root is `[]`.
type Module = Vec<String>;
/// Import edges between modules, each with the first place that makes it (file:line and path).
type Graph = BTreeMap<Module, BTreeMap<Module, String>>;

/// Every `.rs` file under `src/` as (path from the crate, text), sorted so messages are stable.
fn src_files() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (mut dirs, mut files) = (vec![root.join("src")], Vec::new());
    while let Some(dir) = dirs.pop() {
        for path in std::fs::read_dir(dir).unwrap().map(|entry| entry.unwrap().path()) {
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
                files.push((rel, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    files.sort();
    files
}

/// `src/conn/http1/mod.rs` or `src/conn/http1.rs` is `conn::http1`; lib.rs and main.rs are the
/// root, which the graphs leave out because it declares every module.
fn module_of(rel: &str) -> Module {
    let rel = rel.trim_start_matches("src/").trim_end_matches(".rs").trim_end_matches("/mod");
    let root = rel == "lib" || rel == "main";
    rel.split('/').filter(|_| !root).map(String::from).collect()
}

/// The files of `src/` that break a rule, one per line: each with what `broken` says of its text.
fn offenders(broken: impl Fn(&str) -> Option<String>) -> String {
    src_files()
        .iter()
        .filter_map(|(rel, text)| Some(format!("\n  {rel}{}", broken(text)?)))
        .collect()
}

#[test]
fn no_src_file_over_600_lines() {
    let long = offenders(|text| {
        Some(text.lines().count()).filter(|&n| n > MAX_LINES).map(|n| format!(": {n} lines"))
    });
    assert!(
        long.is_empty(),
        "files in src/ over {MAX_LINES} lines (split each along its concepts; a large `mod tests` \
         can move to a `tests.rs` child file):{long}"
    );
}

#[test]
fn every_src_file_starts_with_a_module_header() {
    let bare = offenders(|text| (!text.starts_with("//!")).then(String::new));
    assert!(
        bare.is_empty(),
        "files in src/ without a `//!` header on their first line saying what the module owns:{bare}"
    );
}

/// The code of one file as tokens with their line: identifiers, `::`, and single punctuation
/// characters. Comments, string, raw string and char literals are dropped, so a path quoted in
/// a doc comment or a log message is not an import; lifetimes (`'a`) are not char literals.
fn tokens(code: &str) -> Vec<(String, usize)> {
    let c: Vec<char> = code.chars().collect();
    let lines: Vec<usize> = (c.iter())
        .scan(1, |line, &ch| Some(std::mem::replace(line, *line + (ch == '\n') as usize)))
        .collect();
    let at = |i: usize| c.get(i).copied().unwrap_or('\0');
    let two = |i: usize| (at(i), at(i + 1));
    let (mut i, mut out) = (0, Vec::new());
    while i < c.len() {
        let (start, ch, next) = (i, at(i), at(i + 1));
        let word = c[i..].iter().take_while(|x| x.is_alphanumeric() || **x == '_').count();
        let hashes = c[i + word..].iter().take_while(|&&x| x == '#').count();
        if (ch, next) == ('/', '/') {
            i += c[i..].iter().take_while(|&&x| x != '\n').count();
        } else if (ch, next) == ('/', '*') {
            let mut depth = 0; // block comments nest
            while i < c.len() && (i == start || depth > 0) {
                let d = (two(i) == ('/', '*')) as i32 - (two(i) == ('*', '/')) as i32;
                (depth, i) = (depth + d, i + 1 + (d != 0) as usize);
            }
        } else if ch == '"' {
            i += 1;
            while i < c.len() && at(i) != '"' {
                i += 1 + (at(i) == '\\') as usize;
            }
            i += 1;
        } else if ch == '\'' && (next == '\\' || at(i + 2) == '\'') {
            i += 2 + (next == '\\') as usize; // in `'\''` the second quote is the char
            i += c[i..].iter().take_while(|&&x| x != '\'').count() + 1;
        } else if matches!(c[i..i + word], ['r'] | ['b', 'r']) && at(i + word + hashes) == '"' {
            // A raw string ends at a quote followed by as many `#` as it opened with.
            let end: Vec<char> = std::iter::once('"').chain(vec!['#'; hashes]).collect();
            i += word + hashes + 1;
            i += (i..c.len()).take_while(|&j| !c[j..].starts_with(&end)).count() + end.len();
        } else {
            i += word.max(if (ch, next) == (':', ':') { 2 } else { 1 });
            if !ch.is_whitespace() {
                out.push((c[start..i].iter().collect(), lines[start]));
            }
        }
    }
    out
}

/// The paths of one file, `use`d or written out: their segments, how many inline `mod x { … }`
/// blocks are around them (which `super` climbs out of first), and their line. A `use` tree gives
/// one path per leaf: `use crate::a::{b, c::{d as e}}` gives `crate::a::b` and `crate::a::c::d`.
fn paths(code: &str) -> Vec<(Vec<String>, usize, usize)> {
    let t = tokens(code);
    let text = |i: usize| t.get(i).map_or(";", |(s, _)| s.as_str());
    let is_ident = |i: usize| text(i).starts_with(|c: char| c.is_alphanumeric() || c == '_');
    // Each open brace, and whether it is an inline module's.
    let (mut out, mut braces, mut i) = (Vec::new(), Vec::<bool>::new(), 0);
    while i < t.len() {
        let is_use = text(i) == "use" && text(i + 1) != "<"; // not `impl Trait + use<'a>`
        if is_use || matches!(text(i), "crate" | "super" | "self") && text(i + 1) == "::" {
            // One path, or each leaf of a `use` tree; `groups` has the prefix's length at each `{`.
            let (mut prefix, mut groups) = (Vec::new(), vec![0]);
            let inline = braces.iter().filter(|&&m| m).count();
            i += is_use as usize;
            loop {
                let segment = (is_ident(i) || text(i) == "*")
                    && (is_use || prefix.is_empty() || text(i - 1) == "::");
                match text(i) {
                    "::" => {}
                    "{" if is_use => groups.push(prefix.len()),
                    "as" if is_use => i += 1, // `b as c` imports `b`
                    s if segment => prefix.push(s.to_string()),
                    s => {
                        if prefix.len() > groups[groups.len() - 1] {
                            out.push((prefix.clone(), inline, t[i - 1].1));
                        }
                        if !is_use || s == ";" {
                            break;
                        } else if s == "}" {
                            groups.pop();
                        }
                        prefix.truncate(groups[groups.len() - 1]);
                    }
                }
                i += 1;
            }
            continue; // the token that ended the path is read again
        } else if text(i) == "{" {
            braces.push(i >= 2 && text(i - 2) == "mod"); // `mod x {` opens an inline module
        } else if text(i) == "}" {
            braces.pop();
        }
        i += 1;
    }
    out
}

/// The module a path names, seen from `cur` (the file's module and the inline modules around
/// the path): the deepest module of `mods` it goes through, as an item is not a module.
fn resolve(cur: &[String], path: &[String], mods: &BTreeSet<Module>) -> Module {
    let mut full = cur.to_vec();
    for seg in path {
        match seg.as_str() {
            "crate" => full.clear(),
            "super" => _ = full.pop(),
            "self" => {} // `self::x`, or `a::{self}` which is `a`
            s => full.push(s.to_string()),
        }
    }
    while !full.is_empty() && !mods.contains(&full) {
        full.pop();
    }
    full
}

/// Every import edge between the modules of `files` (relative path, text), with its witness.
fn import_graph<S: AsRef<str>>(files: &[(S, S)]) -> Graph {
    let mods: BTreeSet<Module> = files.iter().map(|(rel, _)| module_of(rel.as_ref())).collect();
    let mut graph = Graph::new();
    for (rel, text) in files {
        let (rel, from) = (rel.as_ref(), module_of(rel.as_ref()));
        for (path, inline, line) in paths(text.as_ref()) {
            // An inline module is not a file, so its name cannot matter: only `super` leaves it.
            let to = resolve(&[from.clone(), vec![String::new(); inline]].concat(), &path, &mods);
            if to != from && ["crate", "super", "self"].contains(&path[0].as_str()) {
                let witness = format!("{rel}:{line} `{}`", path.join("::"));
                graph.entry(from.clone()).or_default().entry(to).or_insert(witness);
            }
        }
    }
    graph
}

/// The import cycles among the children of `scope`, one message each: the modules that all reach
/// each other (a strongly connected component, found by comparing what each module reaches; the
/// graphs are small), then each edge among them with a file and path that makes it.
fn cycles(graph: &Graph, scope: &[String]) -> Vec<String> {
    // An edge between two modules below `scope` moves up to the children they sit in; edges to
    // or from `scope` itself, or within one child, drop out.
    let n = scope.len();
    let below = |m: &Module| m.len() > n && m[..n] == *scope;
    let mut kids = Graph::new();
    for (from, tos) in graph.iter().filter(|(from, _)| below(from)) {
        for (to, witness) in tos.iter().filter(|(to, _)| below(to) && to[n] != from[n]) {
            let edges = kids.entry(from[..=n].to_vec()).or_default();
            edges.entry(to[..=n].to_vec()).or_insert_with(|| witness.clone());
        }
    }
    // What each child reaches through imports, by depth-first search.
    let reached: BTreeMap<&Module, BTreeSet<&Module>> = (kids.keys())
        .map(|start| {
            let (mut seen, mut todo) = (BTreeSet::new(), vec![start]);
            while let Some(m) = todo.pop() {
                let next = kids.get(m).into_iter().flat_map(|tos| tos.keys());
                todo.extend(next.filter(|&n| seen.insert(n)));
            }
            (start, seen)
        })
        .collect();
    let parent = if scope.is_empty() { "the crate root".into() } else { scope.join("::") };
    let mut out = Vec::new();
    for (&start, seen) in reached.iter().filter(|(m, seen)| seen.contains(*m)) {
        let scc: Vec<&Module> = (reached.keys().copied())
            .filter(|m| seen.contains(m) && reached[m].contains(start))
            .collect();
        if scc[0] != start {
            continue; // told once, from its first module
        }
        let names = scc.iter().map(|m| m.join("::")).collect::<Vec<_>>().join(", ");
        let mut msg = format!("\nan import cycle among the children of {parent}: {names}");
        for (from, to) in scc.iter().flat_map(|&m| kids[m].iter().map(move |to| (m, to))) {
            if scc.contains(&to.0) {
                msg += &format!("\n    {} -> {}: {}", from.join("::"), to.0.join("::"), to.1);
            }
        }
        out.push(msg);
    }
    out
}

#[test]
fn no_import_cycle_in_src() {
    let files = src_files();
    let graph = import_graph(&files);
    // The root (lib.rs) for the top level, and each folder module for its children.
    let scopes: BTreeSet<Module> = (files.iter())
        .filter_map(|(rel, _)| module_of(rel).split_last().map(|(_, parent)| parent.to_vec()))
        .collect();
    let found: String = scopes.iter().flat_map(|scope| cycles(&graph, scope)).collect();
    assert!(
        found.is_empty(),
        "data should flow one way between modules; break each cycle below by moving what both \
         sides need into a module both can import (each edge: a file and the path that makes it):\
         {found}"
    );
}

/// The scan itself, on a made-up crate, so that the test above cannot pass by seeing nothing.
#[test]
fn the_import_scan_sees_code_paths_only_and_finds_each_cycle() {
    let files = [
        ("src/lib.rs", "//! root\nmod a; mod b; mod c; mod d;"),
        // A grouped `use`, a glob and an alias; none of the quoted or commented paths count.
        (
            "src/a/mod.rs",
            "use crate::{b::{self, X as Y}, c::*};\n// use crate::d;\n/* crate::d /* nested */ crate::d */\n\
             fn f<'a>(_: &'a str) -> char { let _ = ('\"', \"crate::d\", r#\"\" crate::d \"#); '\\'' }",
        ),
        ("src/a/one.rs", "fn f() { super::two::g() }"),
        ("src/a/two.rs", "#[cfg(test)]\nmod tests {\n    use super::super::one::f;\n}"),
        ("src/b.rs", "pub(crate) fn g() -> crate::c::T { todo!() }"),
        ("src/c.rs", "fn h() { crate::a::one::f() }\nmod tests { use super::super::d; }"),
        ("src/d.rs", "use self::e; mod e {}"),
    ];
    let graph = import_graph(&files);
    let edge = |(a, b): (&Module, &Module)| format!("{}->{} ", a.join("::"), b.join("::"));
    let edges: String =
        graph.iter().flat_map(|(a, tos)| tos.keys().map(|b| edge((a, b)))).collect();
    assert_eq!(edges, "a->b a->c a::one->a::two a::two->a::one b->c c->a::one c->d ");
    let top = cycles(&graph, &[]).concat();
    let cycle = [
        "\nan import cycle among the children of the crate root: a, b, c",
        "a -> b: src/a/mod.rs:1 `crate::b::self`",
        "a -> c: src/a/mod.rs:1 `crate::c::*`",
        "b -> c: src/b.rs:1 `crate::c::T`",
        "c -> a: src/c.rs:1 `crate::a::one::f`",
    ];
    assert_eq!(top, cycle.join("\n    "));
    let kids = [
        "\nan import cycle among the children of a: a::one, a::two",
        "a::one -> a::two: src/a/one.rs:1 `super::two::g`",
        "a::two -> a::one: src/a/two.rs:3 `super::super::one::f`",
    ];
    assert_eq!(cycles(&graph, &["a".into()]).concat(), kids.join("\n    "));
}
