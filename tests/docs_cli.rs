//! Every flag and subcommand of `runner` is documented in docs/configuration.md.

use clap::CommandFactory;
use layered_runner::cli::Cli;

#[test]
fn every_flag_and_subcommand_is_documented() {
    let docs = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .expect("docs/configuration.md");
    let cmd = Cli::command();
    let mut missing = Vec::new();
    for arg in cmd.get_arguments() {
        if arg.is_hide_set() {
            continue;
        }
        if let Some(long) = arg.get_long() {
            let flag = format!("--{long}");
            if !docs.contains(&format!("`{flag}")) {
                missing.push(flag);
            }
        }
    }
    for sub in cmd.get_subcommands() {
        let name = format!("runner {}", sub.get_name());
        if !docs.contains(&name) {
            missing.push(name);
        }
    }
    assert!(
        missing.is_empty(),
        "undocumented in docs/configuration.md: {missing:?}"
    );
}
