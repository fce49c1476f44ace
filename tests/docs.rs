//! docs/SEMANTICS.md names, for every case, the test that proves it: each
//! name must be a test function in this tree, or the table lies.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if path.is_dir() && name != "target" && name != "node_modules" {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_test_named_in_semantics_md_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let doc = std::fs::read_to_string(root.join("docs/SEMANTICS.md")).expect("docs/SEMANTICS.md");
    let mut sources = String::new();
    let mut files = Vec::new();
    for dir in ["crates", "tests"] {
        rust_files(&root.join(dir), &mut files);
    }
    for file in files {
        sources.push_str(&std::fs::read_to_string(&file).unwrap_or_default());
    }
    // Backticked snake_case names with at least three words are test names.
    // Every second piece between backticks is inside a pair of them.
    let names: Vec<&str> = doc
        .split('`')
        .enumerate()
        .filter_map(|(i, piece)| (i % 2 == 1).then_some(piece))
        .filter(|s| {
            s.matches('_').count() >= 2 && s.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        })
        .collect();
    assert!(
        names.len() >= 15,
        "only {} test names found in the table",
        names.len()
    );
    let missing: Vec<&&str> = names
        .iter()
        .filter(|name| !sources.contains(&format!("fn {name}(")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/SEMANTICS.md names tests that do not exist: {missing:?}"
    );
}
