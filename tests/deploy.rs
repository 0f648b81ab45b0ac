//! The deploy files against the code: what the suite can check without pulling images.

use std::path::{Path, PathBuf};

use serde::Deserialize;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The Dockerfile's instructions, continuation lines joined, comments dropped.
fn instructions(dockerfile: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                out.push(std::mem::take(&mut current));
            }
        }
    }
    out
}

/// Whether `.dockerignore`'s `patterns` leave `path` out of the build context (the patterns
/// used here: a name or path, matched as that path or a prefix directory, or `*.ext`).
fn ignored(path: &str, patterns: &[&str]) -> bool {
    patterns.iter().any(|p| {
        if let Some(ext) = p.strip_prefix("*.") {
            path.ends_with(&format!(".{ext}"))
        } else {
            path == *p || path.starts_with(&format!("{p}/"))
        }
    })
}

#[test]
fn every_copy_source_is_in_the_build_context() {
    let dockerfile = read(&root().join("Dockerfile"));
    let dockerignore = read(&root().join(".dockerignore"));
    let patterns: Vec<&str> = dockerignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let copies: Vec<String> = instructions(&dockerfile)
        .into_iter()
        .filter(|i| i.starts_with("COPY ") && !i.contains("--from="))
        .collect();
    assert!(
        copies.len() >= 5,
        "the build stage copies the sources: {copies:?}"
    );
    for copy in copies {
        let words: Vec<&str> = copy.split_whitespace().skip(1).collect();
        let (sources, _destination) = words.split_at(words.len() - 1);
        for source in sources {
            assert!(
                root().join(source).exists(),
                "COPY {source}: not in the build context"
            );
            assert!(
                !ignored(source, &patterns),
                "COPY {source}: .dockerignore leaves it out"
            );
        }
    }
    // The build needs every workspace member's manifest.
    let manifest = read(&root().join("Cargo.toml"));
    let members = manifest
        .split("members = [")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .expect("workspace members");
    for member in members.split(',').map(|m| m.trim().trim_matches('"')) {
        let top = member.split('/').next().unwrap_or(member);
        assert!(
            dockerfile.contains(&format!("COPY {top} {top}")),
            "the image's build lacks workspace member {member}"
        );
    }
}

#[test]
fn the_image_runs_as_a_user_with_a_volume_a_healthcheck_and_the_graceful_signal() {
    let dockerfile = read(&root().join("Dockerfile"));
    let all = instructions(&dockerfile);
    let runtime: Vec<&String> = all
        .iter()
        .skip_while(|i| !i.starts_with("FROM debian"))
        .collect();
    assert!(!runtime.is_empty(), "a slim runtime stage");
    let has = |prefix: &str| runtime.iter().any(|i| i.starts_with(prefix));
    assert!(
        has("USER 10001:10001"),
        "not root: the mmsub user, by number"
    );
    assert!(has("VOLUME [\"/var/lib/mmsub\"]"));
    assert!(has("HEALTHCHECK ") && dockerfile.contains("/healthz"));
    // The server drains and closes gracefully on SIGTERM (README "Configuration").
    assert!(has("STOPSIGNAL SIGTERM"));
    assert!(
        all.iter().filter(|i| i.starts_with("FROM ")).count() == 2,
        "a build stage and a runtime stage"
    );
}

/// Every environment variable the binary reads: each flag's, and `RUST_LOG`.
fn settings_the_binary_reads() -> std::collections::BTreeSet<String> {
    use clap::CommandFactory;
    let mut names = std::collections::BTreeSet::from(["RUST_LOG".to_owned()]);
    let cli = mmsub::config::Cli::command();
    let mut commands = vec![&cli];
    commands.extend(cli.get_subcommands());
    for command in commands {
        for arg in command.get_arguments() {
            if let Some(env) = arg.get_env() {
                names.insert(env.to_string_lossy().into_owned());
            }
        }
    }
    assert!(
        names.len() > 50,
        "the flags have their variables: {names:?}"
    );
    names
}

/// What each role cannot start without (besides defaults).
fn required(role: &str) -> &'static [&'static str] {
    const KAFKA: [&str; 2] = ["MMSUB_BUS", "MMSUB_KAFKA_BROKERS"];
    match role {
        "relay" => &KAFKA,
        "ingest" => &[
            "MMSUB_BUS",
            "MMSUB_KAFKA_BROKERS",
            "MATTERMOST_SERVER_URL",
            "MATTERMOST_ADMIN_LOGIN_ID",
            "MATTERMOST_ADMIN_LOGIN_PASSWORD",
        ],
        "api" => &[
            "MMSUB_BUS",
            "MMSUB_KAFKA_BROKERS",
            "MMSUB_JWT_SECRET",
            "MATTERMOST_SERVER_URL",
            "MATTERMOST_ADMIN_LOGIN_ID",
            "MATTERMOST_ADMIN_LOGIN_PASSWORD",
        ],
        "gateway" => &[
            "MMSUB_BUS",
            "MMSUB_KAFKA_BROKERS",
            "MMSUB_RELAYS",
            "MMSUB_JWT_SECRET",
            "MATTERMOST_SERVER_URL",
            "MATTERMOST_ADMIN_LOGIN_ID",
            "MATTERMOST_ADMIN_LOGIN_PASSWORD",
        ],
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn the_compose_files_mmsub_services_set_real_settings_and_every_required_one() {
    let known = settings_the_binary_reads();
    let mut compose: serde_yaml::Value =
        serde_yaml::from_str(&read(&root().join("deploy/compose.yaml"))).expect("YAML");
    compose.apply_merge().expect("merge keys");
    let services = compose["services"].as_mapping().expect("services");
    let mut roles = std::collections::BTreeSet::new();
    for (name, service) in services {
        let is_mmsub = service["image"]
            .as_str()
            .is_some_and(|i| i.starts_with("mmsub:"));
        if !is_mmsub {
            continue;
        }
        let name = name.as_str().expect("a service name");
        let role = service["command"][0]
            .as_str()
            .expect("a role as the command");
        roles.insert(role.to_owned());
        let env: Vec<&str> = service["environment"]
            .as_mapping()
            .expect("an environment map")
            .keys()
            .filter_map(|k| k.as_str())
            .collect();
        for variable in &env {
            assert!(
                known.contains(*variable),
                "{name} sets {variable}, which mmsub does not read"
            );
        }
        for variable in required(role) {
            assert!(env.contains(variable), "{name} ({role}) lacks {variable}");
        }
    }
    let expected: std::collections::BTreeSet<String> = ["api", "gateway", "ingest", "relay"]
        .iter()
        .map(|r| (*r).to_owned())
        .collect();
    assert_eq!(roles, expected, "every cluster role runs");
}

#[test]
fn the_kubernetes_roles_get_real_settings_and_every_required_one() {
    let known = settings_the_binary_reads();
    let text = read(&root().join("deploy/kubernetes/mmsub.yaml"));
    let documents: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde_yaml::Value::deserialize(d).expect("YAML"))
        .collect();
    // What the roles' envFrom brings: the ConfigMap's data and the Secret's stringData.
    let mut provided = std::collections::BTreeMap::new();
    for document in &documents {
        let (kind, name) = (&document["kind"], &document["metadata"]["name"]);
        let keys = match kind.as_str() {
            Some("ConfigMap") => &document["data"],
            Some("Secret") => &document["stringData"],
            _ => continue,
        };
        let keys: Vec<String> = keys
            .as_mapping()
            .expect("keys")
            .keys()
            .filter_map(|k| k.as_str().map(str::to_owned))
            .collect();
        for key in &keys {
            assert!(
                known.contains(key),
                "{} {} sets {key}, which mmsub does not read",
                kind.as_str().unwrap_or_default(),
                name.as_str().unwrap_or_default()
            );
        }
        provided.insert(name.as_str().expect("a name").to_owned(), keys);
    }
    let mut roles = std::collections::BTreeSet::new();
    for document in documents.iter().filter(|d| d["kind"] == "Deployment") {
        for container in document["spec"]["template"]["spec"]["containers"]
            .as_sequence()
            .expect("containers")
        {
            let role = container["args"][0]
                .as_str()
                .expect("a role as the first arg");
            roles.insert(role.to_owned());
            let mut env: Vec<String> = Vec::new();
            for source in container["envFrom"].as_sequence().into_iter().flatten() {
                let name = source["configMapRef"]["name"]
                    .as_str()
                    .or_else(|| source["secretRef"]["name"].as_str())
                    .expect("a ConfigMap or Secret");
                env.extend(provided.get(name).cloned().unwrap_or_else(|| {
                    panic!("{role} reads {name}, which this file does not define")
                }));
            }
            for variable in required(role) {
                assert!(
                    env.iter().any(|e| e == variable),
                    "the {role} Deployment lacks {variable}"
                );
            }
        }
    }
    assert_eq!(roles.len(), 4, "api, relay, gateway and ingest: {roles:?}");
}
