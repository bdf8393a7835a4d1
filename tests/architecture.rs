//! The architecture rules of issue 15, read off the source tree itself:
//! - no import circle between the files of src/;
//! - the v1 paths (string literals starting with "/v1") are spelled only in src/api/ and
//!   src/server/routes.rs; everyone else takes them from `api::v1`.
//!
//! What counts as file A importing file B: A names something through a path that starts at
//! `crate::`, `super::`, `self::`, a child module, or a module A brought in by `use`; in a
//! `use` (`pub use` too, braces expanded) or inline in code (`job::run(…)`). The path leads
//! to the file of the deepest module it names (`src/a/b.rs` or `src/a/b/mod.rs`), so
//! `crate::a::Thing` with Thing in (or re-exported by) src/a/mod.rs imports src/a/mod.rs. A
//! path naming only a module (`use crate::job::time;`) imports nothing by itself; what is
//! named through it later does. Not counted: `mod x;` (structure, not an import), comments,
//! strings and `#[cfg(test)]` items. src/main.rs is the binary's own crate, left out.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};

/// A module's path from the crate root: `src/a/b.rs` and `src/a/b/mod.rs` are `["a", "b"]`.
type Module = Vec<String>;
/// The files of src/ by module.
type Files = BTreeMap<Module, String>;
/// Each file of src/ and the files it imports.
type Imports = BTreeMap<String, BTreeSet<String>>;

#[test]
fn no_import_circles_between_files() {
    let files = source_files();
    let mut imports = BTreeMap::new();
    for (module, file) in &files {
        imports.insert(
            file.clone(),
            imported_files(module, &lex(&read(file)).0, &files),
        );
    }
    let circles = circles(&imports);
    assert!(
        circles.is_empty(),
        "import circles between files of src/ (the shortest through each import in one):\n{}",
        circles.into_iter().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn v1_paths_are_spelled_only_in_the_protocol() {
    let mut found = Vec::new();
    for file in source_files().values() {
        if file.starts_with("api/") || file == "server/routes.rs" {
            continue;
        }
        for (line, text) in lex(&read(file)).1 {
            if text.starts_with("/v1") {
                found.push(format!("src/{file}:{line}: \"{text}\""));
            }
        }
    }
    assert!(
        found.is_empty(),
        "v1 paths outside src/api/ and src/server/routes.rs:\n{}",
        found.join("\n")
    );
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn read(file: &str) -> String {
    fs::read_to_string(src().join(file)).unwrap()
}

/// Every file of the library (`a/b.rs`, relative to src/), by the module it defines.
fn source_files() -> Files {
    let (mut files, mut dirs) = (Files::new(), vec![src()]);
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let file = path.strip_prefix(src()).unwrap().display().to_string();
            let stem = file.trim_end_matches(".rs").trim_end_matches("/mod");
            if path.is_dir() {
                dirs.push(path);
            } else if stem == "lib" {
                files.insert(Module::new(), file);
            } else if file.ends_with(".rs") && stem != "main" {
                files.insert(stem.split('/').map(String::from).collect(), file);
            }
        }
    }
    files
}

/// Splits Rust source into words, `::` and single punctuation marks, and sets the string
/// literals (raw and byte ones too) aside with the line each starts on. Comments and char
/// literals are dropped; a lifetime stays a quote and a word.
fn lex(text: &str) -> (Vec<String>, Vec<(usize, String)>) {
    let chars: Vec<char> = text.chars().collect();
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    let (mut tokens, mut strings, mut line, mut i) = (vec![], vec![], 1, 0);
    while i < chars.len() {
        let start = i;
        let word_end = i + chars[i..]
            .iter()
            .take_while(|c| c.is_alphanumeric() || **c == '_')
            .count();
        let word: String = chars[i..word_end].iter().collect();
        if at(i) == '/' && at(i + 1) == '/' {
            i = skip_past(&chars, i, "\n");
        } else if at(i) == '/' && at(i + 1) == '*' {
            i = skip_past(&chars, i, "*/");
        } else if at(i) == '"'
            || matches!(&*word, "b" | "r" | "br") && matches!(at(word_end), '"' | '#')
        {
            // "…", b"…", or raw r#"…"# with any number of #, where \ escapes nothing.
            let hashes = chars[word_end..].iter().take_while(|c| **c == '#').count();
            let open = word_end + hashes + 1;
            i = open;
            while !(chars[i] == '"' && chars[i + 1..].iter().take(hashes).all(|c| *c == '#')) {
                i += 1 + usize::from(chars[i] == '\\' && !word.contains('r'));
            }
            strings.push((line, chars[open..i].iter().collect()));
            i += 1 + hashes;
        } else if at(i) == '\'' && at(i + 1) == '\\' {
            i = skip_past(&chars, i + 3, "'"); // '\n', '\'', '\u{…}'
        } else if at(i) == '\'' && at(i + 2) == '\'' {
            i += 3; // 'x'
        } else if word_end > i {
            tokens.push(word);
            i = word_end;
        } else if at(i) == ':' && at(i + 1) == ':' {
            tokens.push("::".to_string());
            i += 2;
        } else {
            if !at(i).is_whitespace() {
                tokens.push(at(i).to_string());
            }
            i += 1;
        }
        line += chars[start..i.min(chars.len())]
            .iter()
            .filter(|c| **c == '\n')
            .count();
    }
    (tokens, strings)
}

/// The index just after the first `end` at or after `i`.
fn skip_past(chars: &[char], mut i: usize, end: &str) -> usize {
    let end: Vec<char> = end.chars().collect();
    while i < chars.len() && !chars[i..].starts_with(&end) {
        i += 1;
    }
    i + end.len()
}

/// The files that the file of `module`, lexed into `tokens`, imports (itself left out).
fn imported_files(module: &Module, tokens: &[String], files: &Files) -> BTreeSet<String> {
    let token = |i: usize| tokens.get(i).map_or("", String::as_str);
    let is_word = |i: usize| token(i).starts_with(|c: char| c.is_alphabetic() || c == '_');
    let test_attribute = ["#", "[", "cfg", "(", "test", ")", "]"].map(String::from);
    let mut here = module.clone(); // goes into inline `mod name { … }` blocks and out again
    let (mut depth, mut inline_module_depths) = (0, vec![]);
    let mut aliases = BTreeMap::new(); // name in scope -> the module it stands for
    let mut imported = BTreeSet::new();
    let mut i = 0;
    while i < tokens.len() {
        match token(i) {
            "#" if tokens[i..].starts_with(&test_attribute) => {
                i = end_of_item(tokens, i + test_attribute.len()) - 1
            }
            "{" => depth += 1,
            "}" => {
                depth -= 1;
                if inline_module_depths.last() == Some(&depth) {
                    inline_module_depths.pop();
                    here.pop();
                }
            }
            "mod" if token(i + 2) == "{" => {
                here.push(token(i + 1).to_string());
                inline_module_depths.push(depth);
                i += 1;
            }
            "use" => {
                let mut paths = vec![];
                i += 1;
                use_tree(tokens, &mut i, vec![], &mut paths);
                for (path, name) in paths {
                    match resolve(&path, &here, &aliases, files) {
                        Some((target, false)) => _ = aliases.insert(name, target),
                        Some((target, true)) => _ = imported.insert(target),
                        None => {}
                    }
                }
            }
            _ if is_word(i) && token(i + 1) == "::" && token(i.wrapping_sub(1)) != "::" => {
                let mut path = vec![token(i).to_string()];
                while token(i + 1) == "::" && is_word(i + 2) {
                    path.push(token(i + 2).to_string());
                    i += 2;
                }
                if let Some((target, true)) = resolve(&path, &here, &aliases, files) {
                    imported.insert(target);
                }
            }
            _ => {}
        }
        i += 1;
    }
    imported.remove(module);
    imported
        .iter()
        .map(|target| files[target].clone())
        .collect()
}

/// Where the item starting at `i` ends: just after its `;` or its closing brace.
fn end_of_item(tokens: &[String], mut i: usize) -> usize {
    let mut depth = 0;
    while i < tokens.len() {
        match tokens[i].as_str() {
            "{" => depth += 1,
            "}" if depth == 1 => return i + 1,
            "}" => depth -= 1,
            ";" if depth == 0 => return i + 1,
            _ => {}
        }
        i += 1;
    }
    i
}

/// Expands the use tree at `i` (`a::{self, b, c::d as e}`) into each full path and the name
/// it brings into scope, and leaves `i` on the token after the tree.
fn use_tree(
    tokens: &[String],
    i: &mut usize,
    mut path: Vec<String>,
    out: &mut Vec<(Vec<String>, String)>,
) {
    loop {
        *i += 1;
        match tokens[*i - 1].as_str() {
            "{" => {
                while tokens[*i] != "}" {
                    use_tree(tokens, i, path.clone(), out);
                    *i += usize::from(tokens[*i] == ",");
                }
                *i += 1;
                return;
            }
            "self" if !path.is_empty() => {}
            segment => path.push(segment.to_string()),
        }
        if tokens[*i] != "::" {
            break;
        }
        *i += 1;
    }
    let mut name = path.last().cloned().unwrap_or_default();
    if tokens[*i] == "as" {
        name = tokens[*i + 1].clone();
        *i += 2;
    }
    out.push((path, name));
}

/// The module with a file that `path`, written in module `here`, leads to, and whether the
/// path goes on to name something in it; `None` for paths that leave the crate.
fn resolve(
    path: &[String],
    here: &Module,
    aliases: &BTreeMap<String, Module>,
    files: &Files,
) -> Option<(Module, bool)> {
    let mut module = match path[0].as_str() {
        "crate" => Module::new(),
        "self" | "super" => here.clone(),
        first => aliases
            .get(first)
            .cloned()
            .unwrap_or_else(|| child(here, first)),
    };
    let mut rest = &path[usize::from(path[0] != "super")..];
    while rest.first().is_some_and(|segment| segment == "super") {
        module.pop()?;
        rest = &rest[1..];
    }
    if !files.contains_key(&module) && !here.starts_with(&module) {
        return None; // neither a module with a file nor one inline in this file
    }
    while let Some(deeper) = rest.first().map(|segment| child(&module, segment)) {
        if !files.contains_key(&deeper) {
            break;
        }
        (module, rest) = (deeper, &rest[1..]);
    }
    while !files.contains_key(&module) {
        module.pop(); // an inline module (`mod routes { … }`) is part of its parent's file
    }
    Some((module, !rest.is_empty()))
}

fn child(module: &Module, name: &str) -> Module {
    [module.as_slice(), &[name.to_string()]].concat()
}

/// For each import that closes a circle, the shortest circle through it (`a.rs -> b.rs ->
/// a.rs`); each circle once, starting from its first file by name.
fn circles(imports: &Imports) -> BTreeSet<String> {
    let mut circles = BTreeSet::new();
    for (from, targets) in imports {
        for to in targets {
            let Some(back) = shortest_path(imports, to, from) else {
                continue;
            };
            // `back` runs from `to` to `from`, and `from` imports `to`: the circle's files.
            let mut circle: Vec<&str> = back.iter().map(|file| file.as_str()).collect();
            let first = (0..circle.len()).min_by_key(|k| circle[*k]).unwrap_or(0);
            circle.rotate_left(first);
            circle.push(circle[0]);
            circles.insert(circle.join(" -> "));
        }
    }
    circles
}

/// The files on a shortest import path from `from` to `to`, both included.
fn shortest_path(imports: &Imports, from: &String, to: &String) -> Option<Vec<String>> {
    let mut came_from = BTreeMap::from([(from, from)]);
    let mut queue = VecDeque::from([from]);
    while let Some(file) = queue.pop_front() {
        if file == to {
            let mut path = vec![to.clone()];
            while path[0] != *from {
                path.insert(0, came_from[&path[0]].clone());
            }
            return Some(path);
        }
        for next in &imports[file] {
            if !came_from.contains_key(next) {
                came_from.insert(next, file);
                queue.push_back(next);
            }
        }
    }
    None
}
