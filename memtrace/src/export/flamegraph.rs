//! A flame graph (SVG) of resident bytes by fault stack, drawn by inferno
//! from the folded lines.

use inferno::flamegraph::{self, Options};

pub fn svg(folded: &[String], title: &str) -> Result<Vec<u8>, String> {
    let mut options = Options::default();
    options.title = title.to_owned();
    options.count_name = "bytes".to_owned();
    options.name_type = "Function:".to_owned();
    let mut svg = Vec::new();
    flamegraph::from_lines(&mut options, folded.iter().map(String::as_str), &mut svg)
        .map_err(|err| err.to_string())?;
    Ok(svg)
}
