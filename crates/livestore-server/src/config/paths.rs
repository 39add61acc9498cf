//! Keeping server state out of the static site: a `--static-dir` that contains the data dir, the object store or the
//! config file (or lies inside one of them) would serve every store's events, the object store's keys or the auth
//! secrets to anyone. Such a configuration is refused at startup.

use std::path::{Component, Path, PathBuf};

/// Refuses a static dir that contains, equals or lies inside any of the `protected` paths.
pub(super) fn check_static_dir(
    static_dir: &Path,
    protected: &[(&str, PathBuf)],
) -> Result<(), String> {
    let site = resolve(static_dir);
    for (what, path) in protected {
        let path = resolve(path);
        if path.starts_with(&site) {
            return Err(format!(
                "static_dir {} contains {what} ({}): it would serve the server's own files (databases, object \
                 store keys, secrets); point it at the built web app only",
                static_dir.display(),
                path.display()
            ));
        }
        if site.starts_with(&path) {
            return Err(format!(
                "static_dir {} lies inside {what} ({}); keep the web app outside the server's state",
                static_dir.display(),
                path.display()
            ));
        }
    }
    Ok(())
}

/// An absolute path with symlinks resolved as far as the path exists; the part that does not exist yet (a data
/// dir created at first start) is appended with `.` and `..` resolved lexically.
fn resolve(path: &Path) -> PathBuf {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    };
    let mut existing = absolute.as_path();
    let mut missing = Vec::new();
    loop {
        if let Ok(canonical) = std::fs::canonicalize(existing) {
            let mut resolved = canonical;
            for component in missing.iter().rev() {
                push_lexically(&mut resolved, *component);
            }
            return resolved;
        }
        match (existing.parent(), existing.components().next_back()) {
            (Some(parent), Some(last)) => {
                missing.push(last);
                existing = parent;
            }
            _ => return absolute,
        }
    }
}

fn push_lexically(path: &mut PathBuf, component: Component<'_>) {
    match component {
        Component::CurDir => {}
        Component::ParentDir => {
            path.pop();
        }
        other => path.push(other.as_os_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_site_around_or_inside_server_state_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let site = root.path().join("site");
        std::fs::create_dir_all(&site).unwrap();
        let data = root.path().join("data");
        // The data dir does not exist yet: it still counts, by its future path.
        let around = check_static_dir(root.path(), &[("the data dir", data.clone())]);
        assert!(around.unwrap_err().contains("contains the data dir"));
        let same = check_static_dir(
            &root.path().join("site/../data/."),
            &[("the data dir", data.clone())],
        );
        assert!(same.is_err());
        std::fs::create_dir_all(data.join("objects/web")).unwrap();
        let inside = check_static_dir(&data.join("objects/web"), &[("the data dir", data.clone())]);
        assert!(inside.unwrap_err().contains("lies inside the data dir"));
        check_static_dir(&site, &[("the data dir", data.clone())]).unwrap();
        // A symlink into the data dir is the data dir.
        std::os::unix::fs::symlink(&data, root.path().join("link")).unwrap();
        assert!(check_static_dir(&root.path().join("link"), &[("the data dir", data)]).is_err());
    }
}
