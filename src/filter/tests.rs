//! Parser and matcher tests: tables of expressions, errors with their columns, and
//! generated expressions (printed, re-parsed and evaluated against a reference).

use proptest::prelude::*;

use super::*;

fn facts<'a>(layer: &'a str, category: &'a str, test: &'a str, kind: &'a str) -> UnitFacts<'a> {
    UnitFacts {
        layer,
        category,
        test,
        kind,
        tags: &[],
        failed: false,
        slow: false,
    }
}

fn keeps(expr: &str, f: &UnitFacts<'_>) -> bool {
    Filter::parse(expr)
        .unwrap_or_else(|e| panic!("{expr}: {e}"))
        .matches(f)
}

#[test]
fn matchers_glob_exact_substring_regex() {
    let f = facts("fast", "unit", "tests::adds_two", "nextest");
    for (expr, want) in [
        ("test(tests::*)", true),
        ("test(*adds*)", true),
        ("test(adds)", false),
        ("test(=tests::adds_two)", true),
        ("test(=tests::adds)", false),
        ("test(~adds)", true),
        ("test(~subtracts)", false),
        ("test(/add(s|ed)_t/)", true),
        ("test(/^adds/)", false),
        ("test(#tests::a?ds_two)", true),
        ("layer(fast) & category(unit)", true),
        ("layer(fast) and category(integration)", false),
        ("layer(slow) | kind(nextest)", true),
        ("layer(slow) or kind(command)", false),
        ("!layer(slow)", true),
        ("not layer(fast)", false),
        ("not(layer(fast))", false),
        ("!(layer(fast) & category(unit))", false),
        ("layer(fast) & (category(x) | test(~two))", true),
        ("all()", true),
        ("none()", false),
        ("failed()", false),
        ("slow() | !failed()", true),
        ("  layer ( fast )  &&  category( unit ) ", true),
        ("layer(fast) || none()", true),
    ] {
        assert_eq!(keeps(expr, &f), want, "{expr}");
    }
}

#[test]
fn precedence_not_then_and_then_or() {
    let f = facts("a", "b", "c", "command");
    // `|` binds looser than `&`: true | (false & false).
    assert!(keeps("layer(a) | layer(x) & layer(y)", &f));
    // `!` binds tighter than `&`: (!false) & true.
    assert!(keeps("!layer(x) & layer(a)", &f));
    assert!(!keeps("!(layer(x) | layer(a))", &f));
}

#[test]
fn tags_history_and_kinds() {
    let tags = vec!["db".to_string(), "slow-net".to_string()];
    let f = UnitFacts {
        tags: &tags,
        failed: true,
        slow: true,
        ..facts("l", "c", "t", "pytest")
    };
    assert!(keeps("tag(db) & failed() & slow()", &f));
    assert!(keeps("tag(slow-*) & kind(pytest)", &f));
    assert!(!keeps("tag(=slow)", &f));
    assert!(Filter::parse("failed()").unwrap().needs_history());
    assert!(
        Filter::parse("!(layer(a) | slow())")
            .unwrap()
            .needs_history()
    );
    assert!(!Filter::parse("layer(a) | test(b)").unwrap().needs_history());
}

#[test]
fn escapes_in_names() {
    let f = facts("l", "c", "weird(name)", "command");
    assert!(keeps(r"test(=weird(name\))", &f));
    assert!(keeps(r"test(/d\(n/)", &f));
    assert!(keeps("test(/e\\)$/)", &f));
}

fn error(expr: &str) -> FilterError {
    match Filter::parse(expr) {
        Ok(_) => panic!("`{expr}` parsed"),
        Err(e) => e,
    }
}

#[test]
fn errors_point_at_the_column_and_suggest_a_name() {
    for (expr, column, message, help) in [
        (
            "layer(fast) & tset(foo)",
            15,
            "unknown function `tset`",
            Some("`test`"),
        ),
        (
            "catgory(unit)",
            1,
            "unknown function `catgory`",
            Some("`category`"),
        ),
        (
            "kind(nextst)",
            6,
            "unknown kind `nextst`",
            Some("`nextest`"),
        ),
        ("kind(=cmd)", 6, "unknown kind `cmd`", Some("kinds:")),
        ("layer(fast", 6, "never closed", None),
        ("(layer(a)", 10, "expected `)`", Some("column 1")),
        ("layer(a) &", 11, "expected a function", None),
        ("layer(a) layer(b)", 10, "expected `&`", None),
        ("layer()", 7, "needs a name", None),
        ("failed(x)", 8, "takes no argument", None),
        ("test(/a(/)", 6, "invalid regular expression", None),
        ("test(/abc)", 6, "must end with `/`", None),
        ("layer a", 7, "expected `(` after `layer`", None),
        ("", 1, "empty", None),
        ("& layer(a)", 1, "unexpected `&`", None),
        ("xyzzy(a)", 1, "unknown function", Some("functions:")),
    ] {
        let e = error(expr);
        assert_eq!(e.column(), column, "{expr}: {e}");
        assert!(e.message.contains(message), "{expr}: {e}");
        if let Some(h) = help {
            assert!(e.help.as_deref().unwrap_or("").contains(h), "{expr}: {e}");
        }
    }
}

#[test]
fn an_error_renders_a_caret_under_the_column() {
    let e = error("layer(fast) & tset(foo)");
    let text = e.to_string();
    let lines: Vec<&str> = text.lines().collect();
    let source = lines
        .iter()
        .position(|l| l.ends_with("layer(fast) & tset(foo)"))
        .unwrap();
    let caret_line = lines[source + 1];
    let source_col = lines[source].find("layer").unwrap();
    assert_eq!(caret_line.find('^').unwrap() - source_col, 14, "{text}");
    assert_eq!(caret_line.matches('^').count(), 4, "{text}");
    assert!(text.contains("help: did you mean `test`?"), "{text}");
}

fn narrowing(expr: &str, category: &str) -> Narrowing {
    Filter::parse(expr)
        .unwrap()
        .nextest_narrowing(&CategoryFacts {
            category,
            kind: "nextest",
            tags: &[],
        })
}

#[test]
fn nextest_narrowing_keeps_a_superset() {
    use Narrowing::*;
    assert_eq!(narrowing("category(unit)", "unit"), Nothing);
    assert_eq!(narrowing("category(unit)", "integration"), Everything);
    assert_eq!(narrowing("kind(command)", "unit"), Everything);
    assert_eq!(narrowing("test(~adds)", "unit"), To("test(~adds)".into()));
    assert_eq!(
        narrowing("category(unit) & test(=a::b)", "unit"),
        To("test(=a::b)".into())
    );
    assert_eq!(
        narrowing("category(unit) & test(=a::b)", "other"),
        Everything
    );
    assert_eq!(narrowing("test(x*) | layer(fast)", "u"), Nothing);
    assert_eq!(
        narrowing("test(x*) & layer(fast)", "u"),
        To("test(#x*)".into())
    );
    assert_eq!(
        narrowing("!(test(/^a/) | failed())", "u"),
        To("not test(/^a/)".into()),
        "`not failed()` is unknown while listing: it narrows nothing"
    );
    assert_eq!(
        narrowing("!(test(/^a/) & category(u))", "u"),
        To("not test(/^a/)".into())
    );
    assert_eq!(
        narrowing("test(a) | test(=b)", "u"),
        To("(test(#a)) or (test(=b))".into())
    );
    assert_eq!(
        narrowing(r"test(=a\)b)", "u"),
        Nothing,
        "unwritable text narrows nothing"
    );
}

/// A generated expression and a reference evaluator over a fixed unit.
#[derive(Debug, Clone)]
enum Gen {
    Layer(String),
    Test(u8, String),
    Failed,
    Not(Box<Gen>),
    And(Box<Gen>, Box<Gen>),
    Or(Box<Gen>, Box<Gen>),
}

fn gen_expr() -> impl Strategy<Value = Gen> {
    let leaf = prop_oneof![
        "[a-c]{1,2}".prop_map(Gen::Layer),
        (0u8..3, "[a-c]{1,2}").prop_map(|(m, s)| Gen::Test(m, s)),
        Just(Gen::Failed),
    ];
    leaf.prop_recursive(5, 40, 2, |inner| {
        prop_oneof![
            inner.clone().prop_map(|e| Gen::Not(Box::new(e))),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Gen::And(Box::new(a), Box::new(b))),
            (inner.clone(), inner).prop_map(|(a, b)| Gen::Or(Box::new(a), Box::new(b))),
        ]
    })
}

impl Gen {
    /// Printed with random spellings of the operators, fully parenthesised.
    fn print(&self, words: bool) -> String {
        match self {
            Gen::Layer(s) => format!("layer(={s})"),
            Gen::Test(0, s) => format!("test(~{s})"),
            Gen::Test(1, s) => format!("test(/^{s}/)"),
            Gen::Test(_, s) => format!("test({s}*)"),
            Gen::Failed => "failed()".into(),
            Gen::Not(e) if words => format!("not ({})", e.print(!words)),
            Gen::Not(e) => format!("!({})", e.print(!words)),
            Gen::And(a, b) if words => format!("({}) and ({})", a.print(!words), b.print(words)),
            Gen::And(a, b) => format!("({})&({})", a.print(!words), b.print(words)),
            Gen::Or(a, b) if words => format!("({}) or ({})", a.print(!words), b.print(words)),
            Gen::Or(a, b) => format!("({}) | ({})", a.print(!words), b.print(words)),
        }
    }

    fn eval(&self, layer: &str, test: &str, failed: bool) -> bool {
        match self {
            Gen::Layer(s) => s == layer,
            Gen::Test(0, s) => test.contains(s.as_str()),
            Gen::Test(_, s) => test.starts_with(s.as_str()),
            Gen::Failed => failed,
            Gen::Not(e) => !e.eval(layer, test, failed),
            Gen::And(a, b) => a.eval(layer, test, failed) && b.eval(layer, test, failed),
            Gen::Or(a, b) => a.eval(layer, test, failed) || b.eval(layer, test, failed),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Generated expressions parse and evaluate as the reference does.
    #[test]
    fn generated_expressions_evaluate_like_the_reference(
        g in gen_expr(), words in any::<bool>(), layer in "[a-c]{1,2}", test in "[a-c]{0,4}", failed in any::<bool>()
    ) {
        let text = g.print(words);
        let filter = Filter::parse(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        let f = UnitFacts { failed, ..facts(&layer, "cat", &test, "command") };
        prop_assert_eq!(filter.matches(&f), g.eval(&layer, &test, failed), "{}", text);
    }

    /// The parser never panics, and every error points inside (or just past) the text.
    #[test]
    fn arbitrary_text_never_panics(s in "[a-z()!&|=~/\\\\* ]{0,30}|\\PC{0,20}") {
        if let Err(e) = Filter::parse(&s) {
            prop_assert!(e.offset <= s.len());
            prop_assert!(s.is_char_boundary(e.offset));
            let _ = e.to_string();
        }
    }
}
