//! The JWT signing secret: given (`MMSUB_JWT_SECRET`, or the original's `DJANGO_SECRET_KEY`)
//! and checked, or generated once into the data directory and kept private there.

use anyhow::{bail, Context};

use crate::settings::ServerConfig;

/// The signing secret: explicit, or read from (first run: generated into) the data dir.
pub fn resolve_jwt_secret(config: &ServerConfig) -> anyhow::Result<Vec<u8>> {
    if let Some(secret) = &config.jwt_secret {
        check_secret(secret)?;
        return Ok(secret.as_bytes().to_vec());
    }
    let path = config.data_dir.join("jwt-secret");
    if let Ok(secret) = std::fs::read_to_string(&path) {
        return Ok(secret.trim().as_bytes().to_vec());
    }
    mmsub_api::backend::embedded::private_dir(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    let secret = mmsub_api::ids::random_hex(32);
    write_private(&path, &secret).with_context(|| format!("writing {}", path.display()))?;
    tracing::warn!(
        path = %path.display(),
        "no MMSUB_JWT_SECRET or DJANGO_SECRET_KEY set: generated a JWT signing secret; \
         set one of them to share tokens between nodes"
    );
    Ok(secret.into_bytes())
}

/// A signing secret anyone could guess offline from one token is refused at start.
pub fn check_secret(secret: &str) -> anyhow::Result<()> {
    let min = mmsub_api::auth::MIN_SECRET_BYTES;
    if secret.len() < min {
        bail!(
            "the JWT signing secret (MMSUB_JWT_SECRET or DJANGO_SECRET_KEY) has {} bytes; use at \
             least {min} random bytes (e.g. `openssl rand -hex 32`): a short HS256 secret can be \
             guessed offline from any one token",
            secret.len()
        );
    }
    Ok(())
}

fn write_private(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(contents.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_signing_secret_is_refused_at_start_and_djangos_are_accepted() {
        let mut config = ServerConfig::embedded(tempfile::tempdir().unwrap().path());
        config.jwt_secret = Some("x".into());
        let err = resolve_jwt_secret(&config).unwrap_err().to_string();
        assert!(err.contains("at least 32"), "{err}");
        // A Django-generated SECRET_KEY: 50 characters.
        config.jwt_secret = Some("django-insecure-k3$z!9q@w#e4r5t6y7u8i9o0p-a1s2d3fg".into());
        assert_eq!(resolve_jwt_secret(&config).unwrap().len(), 50);
    }

    #[test]
    fn a_generated_secret_is_kept_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let config = ServerConfig::embedded(dir.path());
        let first = resolve_jwt_secret(&config).unwrap();
        assert_eq!(resolve_jwt_secret(&config).unwrap(), first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("jwt-secret"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
