//! `runner schema`: the JSON Schema of the layers file on stdout (generated in
//! [`crate::config::config_schema`] from the types the loader reads), for editor
//! completion (`# yaml-language-server: $schema=…`) and external validators.

use crate::error::Error;
use crate::exit_code::PASSED;
use crate::report::out;

/// Prints the schema, pretty, with a final newline.
pub fn print() -> i32 {
    let schema = crate::config::config_schema();
    match serde_json::to_string_pretty(&schema) {
        Ok(mut text) => {
            text.push('\n');
            out::listing(|| out::write_bytes(text.as_bytes()).map(|()| PASSED))
        }
        Err(e) => Error::infrastructure(format!("runner: cannot print the schema: {e}")).report(),
    }
}
