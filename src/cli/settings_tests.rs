//! The declarations against what documents them and what reads them: `config/app.toml` and the
//! README name every setting with its default and its flag, and nothing else; clap's flags are
//! the declared ones; a value the file refuses, the flag refuses too. Here, beside the command
//! line, because they read it: the config module does not know the command line.

use std::path::Path;

use clap::CommandFactory;

use super::Cli;
use crate::config::{Config, SETTINGS, Schema, Setting};

fn read(path: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A `key = value` line of a TOML text, commented out (`# key = value`) or not.
#[derive(Debug)]
struct Entry {
    table: String,
    key: String,
    value: String,
    commented: bool,
    line: usize,
}

/// The `key = value` lines of `text` under a `[table]` header, commented out or not. Lines under
/// `[[route]]` are not settings; comment lines that do not read as `key = value` are prose.
fn entries(text: &str) -> Vec<Entry> {
    let mut table: Option<String> = None;
    let mut found = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.starts_with("[[") {
            table = None;
            continue;
        }
        if let Some(header) = line.strip_prefix('[') {
            table = header.split(']').next().map(str::to_string);
            continue;
        }
        let Some(table) = &table else { continue };
        let (commented, body) = match line.strip_prefix('#') {
            Some(body) => (true, body.trim_start()),
            None => (false, line),
        };
        let Some((key, _)) = body.split_once('=') else { continue };
        let key = key.trim();
        // A key starts with a letter; digits follow in some (`h2c`).
        let key_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
        if !key.starts_with(|c: char| c.is_ascii_lowercase()) || !key.chars().all(key_char) {
            continue;
        }
        let value = match body.parse::<toml::Table>() {
            Ok(doc) => doc[key].to_string(),
            Err(_) if commented => continue,
            Err(e) => panic!("line {}: {line:?} is not TOML: {e}", i + 1),
        };
        found.push(Entry { table: table.clone(), key: key.into(), value, commented, line: i + 1 });
    }
    found
}

/// What `[table] key = value` alone makes of the default config.
fn config_with(table: &str, key: &str, value: &str) -> Result<Config, String> {
    Config::from_toml(&format!("[{table}]\n{key} = {value}\n"), Path::new("/"), &Schema::default())
        .map_err(|e| e.to_string())
}

/// The setting's default as TOML, or `None` for a setting that is unset by default.
fn default_of(s: &Setting) -> Option<toml::Value> {
    let defaults: toml::Table = toml::from_str(&Config::default().to_toml()).unwrap();
    defaults[s.table].get(s.key).cloned()
}

/// Whether `value` is the setting's default (or, for a setting unset by default, a valid value).
fn check_value(s: &Setting, value: &str) -> Result<(), String> {
    let config = config_with(s.table, s.key, value)?;
    match default_of(s) {
        Some(default) if config != Config::default() => {
            Err(format!("{value} is not the default, {default}"))
        }
        _ => Ok(()),
    }
}

/// Every setting appears once in `text`, in its table, with its default (a setting unset by
/// default commented out, with a valid example); no other key appears in a setting's table.
fn check_reference(name: &str, text: &str) -> Vec<String> {
    let entries = entries(text);
    let mut problems = Vec::new();
    for s in SETTINGS {
        let here: Vec<&Entry> =
            entries.iter().filter(|e| e.table == s.table && e.key == s.key).collect();
        let &[e] = &here[..] else {
            problems.push(format!("{name}: [{}] {} appears {} times", s.table, s.key, here.len()));
            continue;
        };
        if let Err(why) = check_value(s, &e.value) {
            problems.push(format!("{name}:{}: [{}] {}: {why}", e.line, s.table, s.key));
        } else if default_of(s).is_none() && !e.commented {
            problems
                .push(format!("{name}:{}: {} is unset by default: comment it out", e.line, s.key));
        }
    }
    for e in &entries {
        if !SETTINGS.iter().any(|s| s.table == e.table && s.key == e.key) {
            problems.push(format!("{name}:{}: [{}] {} is not a setting", e.line, e.table, e.key));
        }
    }
    problems
}

fn assert_none(problems: Vec<String>) {
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn the_reference_config_has_every_setting_with_its_default() {
    assert_none(check_reference("config/app.toml", &read("config/app.toml")));
}

/// The README's section that starts with `heading`, up to the next heading of its level.
fn section<'a>(readme: &'a str, heading: &str) -> &'a str {
    let start = readme.find(&format!("\n{heading}\n")).unwrap_or_else(|| panic!("{heading}"));
    let rest = &readme[start + heading.len() + 2..];
    &rest[..rest.find("\n## ").unwrap_or(rest.len())]
}

/// The cells of a markdown table row; `\|` (a `|` inside a cell) does not split it.
fn cells(row: &str) -> Vec<String> {
    const ESCAPED: &str = "\u{0}";
    let row = row.trim().trim_start_matches('|').trim_end_matches('|').replace("\\|", ESCAPED);
    row.split('|').map(|cell| cell.trim().replace(ESCAPED, "\\|")).collect()
}

/// The `code` spans of a cell.
fn code_spans(cell: &str) -> Vec<&str> {
    cell.split('`').skip(1).step_by(2).collect()
}

/// A setting's flag as the README's table writes it.
fn flag_cell(s: &Setting) -> String {
    let mut flag = String::from("`");
    if let Some(short) = s.short {
        flag += &format!("-{short}, ");
    }
    flag += &s.long();
    if s.shape != "switch" {
        flag += &format!(" {}", s.value_name.replace('|', "\\|"));
    }
    flag.push('`');
    if let Some(alias) = s.alias {
        flag += &format!(" (or `--{alias}`)");
    }
    flag
}

fn dotted(s: &Setting) -> String {
    format!("{}.{}", s.table, s.key)
}

#[test]
fn the_readme_flag_table_has_every_flag_and_nothing_else() {
    let readme = read("README.md");
    let rows: Vec<Vec<String>> = section(&readme, "## Command line")
        .lines()
        .filter(|l| l.starts_with("| `-"))
        .map(cells)
        .collect();
    let mut problems = Vec::new();
    for s in SETTINGS {
        let key = format!("`{}`", dotted(s));
        match rows.iter().filter(|r| r[1] == key).collect::<Vec<_>>()[..] {
            [row] if row[0] == flag_cell(s) => {}
            [row] => problems.push(format!("{key}: flag {}, expected {}", row[0], flag_cell(s))),
            ref found => problems.push(format!("{key}: {} rows", found.len())),
        }
    }
    let mut command = Cli::command();
    command.build();
    let longs: Vec<String> =
        command.get_arguments().filter_map(|a| a.get_long()).map(|l| format!("--{l}")).collect();
    for row in &rows {
        if row[1].is_empty() {
            // The command's own flags: they must exist, and not be a setting's.
            for flag in code_spans(&row[0]).iter().flat_map(|c| c.split([' ', ','])) {
                let flag = flag.trim();
                if flag.starts_with("--")
                    && (!longs.iter().any(|l| l == flag)
                        || SETTINGS.iter().any(|s| s.long() == flag))
                {
                    problems.push(format!("{}: {flag} is not a flag of its own", row[0]));
                }
            }
        } else if !SETTINGS.iter().any(|s| row[1] == format!("`{}`", dotted(s))) {
            problems.push(format!("{}: {} is not a setting", row[0], row[1]));
        }
    }
    for long in &longs {
        if !rows
            .iter()
            .any(|r| code_spans(&r[0]).iter().any(|c| c.split([' ', ',']).any(|f| f == long)))
        {
            problems.push(format!("{long} is missing from the flag table"));
        }
    }
    assert_none(problems);
}

#[test]
fn the_readme_settings_table_and_example_have_every_setting_with_its_default() {
    let readme = read("README.md");
    let configuration = section(&readme, "## Configuration");
    let mut problems = Vec::new();

    // The example in short: a config like `config/app.toml`.
    let start = configuration.find("```toml\n").expect("a toml example") + 8;
    let example = &configuration[start..];
    let example = &example[..example.find("```").unwrap()];
    problems.extend(check_reference("README.md (example)", example));

    // The table of keys: | `server.a`, `server.b` | `1`, `2` | notes |
    let mut seen = Vec::new();
    for row in configuration.lines().filter(|l| l.starts_with("| `")).map(cells) {
        let keys = code_spans(&row[0]);
        let defaults = code_spans(&row[1]);
        for (i, key) in keys.iter().enumerate() {
            if key.starts_with("route.") {
                continue; // a route's keys are not settings
            }
            let Some(s) = SETTINGS.iter().find(|s| dotted(s) == *key) else {
                problems.push(format!("README.md: {key} is not a setting"));
                continue;
            };
            seen.push(key.to_string());
            let found = match (defaults.len(), default_of(s)) {
                (0, None) => Ok(()),
                (_, None) => Err("is unset by default, so its default is none".into()),
                (n, Some(_)) if n == keys.len() => check_value(s, defaults[i]),
                (n, Some(_)) => Err(format!("{n} defaults for {} keys", keys.len())),
            };
            if let Err(why) = found {
                problems.push(format!("README.md: {key}: {why}"));
            }
        }
    }
    for s in SETTINGS {
        let n = seen.iter().filter(|k| **k == dotted(s)).count();
        if n != 1 {
            problems.push(format!("README.md: {} is in the settings table {n} times", dotted(s)));
        }
    }
    assert_none(problems);
}

#[test]
fn each_flag_is_its_key_in_kebab_case_and_is_what_clap_parses() {
    let command = Cli::command();
    for s in SETTINGS {
        assert!(
            s.flag == s.key || s.flag == format!("{}_{}", s.table, s.key),
            "{}: flag {}",
            dotted(s),
            s.long()
        );
        let arg = command.get_arguments().find(|a| a.get_id() == s.flag).expect(s.flag);
        assert_eq!(arg.get_long().map(|l| format!("--{l}")), Some(s.long()));
        assert_eq!(arg.get_short(), s.short);
    }
    let settings =
        command.get_arguments().filter(|a| SETTINGS.iter().any(|s| a.get_id() == s.flag));
    assert_eq!(settings.count(), SETTINGS.len());
}

#[test]
fn the_file_and_the_flag_accept_and_refuse_the_same_values() {
    // (as TOML, as a flag's text)
    let values = [
        ("0", "0"),
        ("1", "1"),
        ("-1", "-1"),
        ("0.5", "0.5"),
        ("1.5", "1.5"),
        ("1e-10", "1e-10"),
        ("1025", "1025"),
        ("8193", "8193"),
        ("70000", "70000"),
        ("2000000", "2000000"),
        ("\"auto\"", "auto"),
        ("\"AUTO\"", "AUTO"),
        ("\"manual\"", "manual"),
        ("\"WARNING\"", "WARNING"),
        ("\"loud\"", "loud"),
        ("\"*\"", "*"),
        ("\"10.0.0.0/8,::1\"", "10.0.0.0/8,::1"),
        ("\"10.0.0.0/33\"", "10.0.0.0/33"),
        ("\"127.0.0.1:1\"", "127.0.0.1:1"),
        ("\"unix:\"", "unix:"),
        ("true", "true"),
        ("\"\"", ""),
    ];
    // A directory's name is any string: `--pythonpath=0` names one, where the file's `[0]` is
    // an integer, not a string; so does an access log format (`0` is a custom one).
    let any_string = |s: &&Setting| s.value_name == "DIR" || s.value_name == "FORMAT";
    for s in SETTINGS.iter().filter(|s| s.shape != "optional" && !any_string(s)) {
        for (toml, flag) in values {
            let toml = if s.shape == "list" { format!("[{toml}]") } else { toml.to_string() };
            let file = config_with(s.table, s.key, &toml);
            let cli = Cli::from_args(["forkserve".to_string(), format!("{}={flag}", s.long())])
                .and_then(|cli| cli.source(Schema::default()).load());
            assert_eq!(
                file.is_ok(),
                cli.is_ok(),
                "{}: {toml} in the file: {:?}; {}={flag}: {:?}",
                dotted(s),
                file.err(),
                s.long(),
                cli.err()
            );
        }
    }
}
