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
