//! Where the HS256 secret comes from: `JWT_SECRET`, else a random secret generated on
//! first start and kept in `DATA_DIR/jwt-secret` (mode 0600). Every command of the
//! binary resolves it the same way, so `seed` issues tokens that `serve` accepts.

use std::{fs, io::Write, os::unix::fs::OpenOptionsExt, path::Path};

use anyhow::Context;
use rand::RngCore;

const SECRET_FILE: &str = "jwt-secret";

pub fn resolve_jwt_secret(configured: Option<&str>, data_dir: &Path) -> anyhow::Result<Vec<u8>> {
    if let Some(secret) = configured {
        if secret.len() < 32 {
            tracing::warn!("JWT_SECRET is shorter than 32 bytes; use a longer random secret");
        }
        return Ok(secret.as_bytes().to_vec());
    }
    let path = data_dir.join(SECRET_FILE);
    match fs::read_to_string(&path) {
        Ok(existing) if !existing.trim().is_empty() => return Ok(existing.trim().as_bytes().to_vec()),
        Ok(_) => anyhow::bail!("{} is empty; delete it or set JWT_SECRET", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let mut bytes = [0u8; 48];
    rand::rng().fill_bytes(&mut bytes);
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(secret.as_bytes())?;
    tracing::warn!(path = %path.display(), "JWT_SECRET is not set: generated a secret and stored it with mode 0600");
    Ok(secret.into_bytes())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn generated_secret_is_private_and_stable() {
        let dir = std::env::temp_dir().join(format!("coursecast-secret-{}", uuid::Uuid::new_v4()));
        let first = resolve_jwt_secret(None, &dir).unwrap();
        let second = resolve_jwt_secret(None, &dir).unwrap();
        assert_eq!(first, second);
        assert_eq!(first.len(), 96);
        let mode = fs::metadata(dir.join(SECRET_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(resolve_jwt_secret(Some("configured"), &dir).unwrap(), b"configured");
        fs::remove_dir_all(dir).unwrap();
    }
}
