//! Every JSON example in README.md parses, and the alert rules shown there are accepted
//! as written.

fn json_blocks() -> Vec<String> {
    let readme = include_str!("../README.md");
    let mut blocks = Vec::new();
    let mut rest = readme;
    while let Some(start) = rest.find("```json\n") {
        let body = &rest[start + "```json\n".len()..];
        let end = body.find("\n```").expect("a closed json block");
        blocks.push(body[..end].to_string());
        rest = &body[end..];
    }
    blocks
}

#[test]
fn every_json_example_parses_and_the_rules_are_accepted() {
    let blocks = json_blocks();
    assert!(!blocks.is_empty(), "the README shows JSON");
    let mut rules = 0;
    for block in &blocks {
        let value: serde_json::Value =
            serde_json::from_str(block).unwrap_or_else(|e| panic!("{e}: {block}"));
        if value
            .as_array()
            .is_some_and(|a| a.iter().all(|r| r.get("condition").is_some()))
        {
            rules += backtest_perf::alerts::rules_from_json(block)
                .unwrap_or_else(|e| panic!("{e}: {block}"))
                .len();
        }
    }
    assert_eq!(rules, 4, "the README's four alert rules");
}

#[test]
fn a_misspelt_rule_field_is_refused_with_its_name() {
    let err = backtest_perf::alerts::rules_from_json(
        r#"[{"name": "x", "severity": "warning", "cooldwon": 60, "condition": {"kind": "rejectedAbove", "bound": 0}}]"#,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("unknown field `cooldwon`"), "{err}");
}

/// The README's command-line synopsis and each command's `--help` name the same flags.
#[cfg(feature = "cli")]
#[test]
fn the_readme_synopsis_matches_the_help_of_every_command() {
    let readme = include_str!("../README.md");
    let start = readme
        .find("## Command line")
        .expect("a Command line section");
    let block = &readme[start..];
    let body = &block[block.find("```sh\n").expect("a synopsis") + 6..];
    let synopsis = &body[..body.find("\n```").expect("a closed synopsis")];
    let mut by_command: Vec<(String, Vec<String>)> = Vec::new();
    for line in synopsis.lines() {
        if let Some(rest) = line.strip_prefix("backtest-perf ") {
            let command = rest.split_whitespace().next().unwrap_or("");
            if command.starts_with('#') {
                continue; // the main job: no command
            }
            by_command.push((command.to_string(), Vec::new()));
        }
        if let Some((_, flags)) = by_command.last_mut() {
            let line = line.split('#').next().unwrap_or("");
            flags.extend(
                line.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                    .filter(|w| w.starts_with("--") && w.len() > 2)
                    .map(str::to_string),
            );
        }
    }
    assert_eq!(
        by_command
            .iter()
            .map(|(c, _)| c.as_str())
            .collect::<Vec<_>>(),
        ["backtest", "compare", "analyze", "stats", "bench"]
    );
    for (command, flags) in &by_command {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_backtest-perf"))
            .args([command.as_str(), "--help"])
            .output()
            .unwrap();
        let help = String::from_utf8(out.stdout).unwrap();
        for flag in flags {
            assert!(
                help.contains(&format!("{flag} "))
                    || help.contains(&format!("{flag}\n"))
                    || help.contains(&format!("{flag}="))
                    || help.contains(&format!("{flag} <")),
                "README shows `{command} {flag}`, its --help does not"
            );
        }
        let documented: Vec<&str> = help
            .lines()
            .filter_map(|l| {
                l.trim_start()
                    .strip_prefix("--")
                    .or_else(|| l.trim_start().split_once(", --").map(|(_, f)| f))
            })
            .map(|f| {
                f.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                    .next()
                    .unwrap_or("")
            })
            .filter(|f| !f.is_empty() && *f != "help" && *f != "version")
            .collect();
        for flag in documented {
            assert!(
                flags.iter().any(|f| f == &format!("--{flag}")),
                "`{command} --help` has --{flag}, the README's synopsis does not"
            );
        }
    }
}
