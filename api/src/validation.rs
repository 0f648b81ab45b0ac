//! Input rules the original inherited from Mattermost, with messages a user can act on.

/// Mattermost's username rule: 3 to 22 characters, a lowercase letter first, then lowercase
/// letters, digits, `.`, `_` or `-`.
pub fn username(name: &str) -> Result<(), String> {
    let ok = (3..=22).contains(&name.len())
        && name.as_bytes()[0].is_ascii_lowercase()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(
            "Invalid username: use 3 to 22 characters, starting with a lowercase letter, \
             containing only lowercase letters, digits, '.', '_' and '-'."
                .into(),
        )
    }
}

/// A practical address check: one `@`, a non-empty local part, a dotted domain, no spaces.
pub fn email(address: &str) -> Result<(), String> {
    let invalid = || Err("Invalid email: enter an address like name@example.com.".into());
    if address.len() > 128 || address.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return invalid();
    }
    let Some((local, domain)) = address.split_once('@') else {
        return invalid();
    };
    let domain_ok = !domain.contains('@')
        && domain.contains('.')
        && domain.split('.').all(|label| {
            !label.is_empty() && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        });
    if local.is_empty() || !domain_ok {
        return invalid();
    }
    Ok(())
}

/// Mattermost's strong password policy: 10+ characters with upper, lower, digit and symbol.
pub fn password(password: &str) -> Result<(), String> {
    let chars = password.chars().count();
    let ok = (10..=72).contains(&chars)
        && password.chars().any(char::is_uppercase)
        && password.chars().any(char::is_lowercase)
        && password.chars().any(|c| c.is_ascii_digit())
        && password
            .chars()
            .any(|c| !c.is_alphanumeric() && !c.is_whitespace());
    if ok {
        Ok(())
    } else {
        Err(
            "Invalid password: use 10 to 72 characters with at least one uppercase letter, \
             one lowercase letter, one digit and one symbol."
                .into(),
        )
    }
}

/// Mattermost's channel-name rule: 1 to 64 lowercase letters, digits, `-` or `_`.
pub fn channel_name(name: &str) -> Result<(), String> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_".contains(&b))
        && name.bytes().any(|b| b != b'_' && b != b'-');
    if ok {
        Ok(())
    } else {
        Err("Invalid channel name: use 1 to 64 lowercase letters, digits, '-' or '_'.".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        for good in ["abc", "a.b_c-1", "abcdefghijklmnopqrstuv"] {
            assert!(username(good).is_ok(), "{good}");
        }
        for bad in [
            "ab",
            "1abc",
            "Abc",
            "abc def",
            "abcdefghijklmnopqrstuvw",
            "ab@c",
        ] {
            assert!(username(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn emails() {
        assert!(email("a@example.com").is_ok());
        for bad in ["", "a", "a@", "@b.c", "a@b", "a b@c.d", "a@b..c"] {
            assert!(email(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn passwords() {
        assert!(password("Str0ng!Pass").is_ok());
        for bad in [
            "Sh0rt!",
            "nouppercase1!",
            "NOLOWERCASE1!",
            "NoDigitsHere!",
            "NoSymbols123",
        ] {
            assert!(password(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn channel_names() {
        assert!(channel_name("town-square").is_ok());
        for bad in ["", "Town", "has space", "__", &"a".repeat(65)] {
            assert!(channel_name(bad).is_err(), "{bad}");
        }
    }
}
