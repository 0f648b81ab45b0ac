//! Keeps the stand-in Mattermost honest: every route it serves exists, with that method, in
//! Mattermost's published `OpenAPI` files (`../shared/mattermost-api/`, copied into
//! `tests/mattermost-standin/spec/`), and every field of every object it answers with is a
//! property of that object in `definitions.yaml`.

use std::collections::BTreeSet;
use std::path::PathBuf;

use mattermost_standin::{shapes, ROUTES};
use serde_yaml::Value;

fn spec_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/mattermost-standin/spec")
}

fn load(file: &str) -> Value {
    let path = spec_dir().join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// `(METHOD, path)` of every operation in the path files.
fn spec_routes() -> BTreeSet<(String, String)> {
    let mut routes = BTreeSet::new();
    for file in ["users.yaml", "teams.yaml", "channels.yaml", "posts.yaml"] {
        let Value::Mapping(paths) = load(file) else {
            panic!("{file} is a mapping of paths");
        };
        for (path, operations) in paths {
            let Value::Mapping(operations) = operations else {
                continue;
            };
            for method in operations.keys() {
                routes.insert((
                    method.as_str().unwrap().to_uppercase(),
                    path.as_str().unwrap().to_owned(),
                ));
            }
        }
    }
    routes
}

#[test]
fn every_route_the_standin_serves_is_in_the_published_api() {
    let spec = spec_routes();
    assert!(
        spec.len() > 100,
        "the spec files were read ({} routes)",
        spec.len()
    );
    let missing: Vec<_> = ROUTES
        .iter()
        .filter(|(method, path)| !spec.contains(&(method.to_string(), path.to_string())))
        .collect();
    assert!(
        missing.is_empty(),
        "routes not in Mattermost's API: {missing:?}"
    );
}

#[test]
fn every_field_the_standin_answers_with_is_in_the_published_definitions() {
    let definitions = load("definitions.yaml");
    let schemas = &definitions["components"]["schemas"];
    // The reference's README documents the error body with one more field than the schema.
    let readme = std::fs::read_to_string(spec_dir().join("README.md")).unwrap();
    let error_body_fields: Vec<String> = ["detailed_error"]
        .into_iter()
        .filter(|f| readme.contains(&format!("\"{f}\"")))
        .map(str::to_owned)
        .collect();
    for (name, sample) in shapes() {
        let properties = &schemas[name]["properties"];
        let Value::Mapping(properties) = properties else {
            panic!("{name} has properties in definitions.yaml");
        };
        let mut known: BTreeSet<&str> = properties.keys().filter_map(Value::as_str).collect();
        if name == "AppError" {
            known.extend(error_body_fields.iter().map(String::as_str));
        }
        let served: Vec<&String> = sample.as_object().unwrap().keys().collect();
        let unknown: Vec<_> = served
            .iter()
            .filter(|f| !known.contains(f.as_str()))
            .collect();
        assert!(
            unknown.is_empty(),
            "{name}: fields not in the spec: {unknown:?}"
        );
    }
}
