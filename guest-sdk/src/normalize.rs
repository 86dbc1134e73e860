//! Normalisation of identifiers the way ad and marketing platforms expect
//! before matching or hashing (Meta, Google, TikTok, Klaviyo…).

/// Email: trimmed and lowercased.
pub fn email(raw: &str) -> String {
    raw.trim().to_lowercase()
}

/// Names (and other free text matched case-insensitively): trimmed and lowercased.
pub fn name(raw: &str) -> String {
    raw.trim().to_lowercase()
}

/// Phone as E.164 digits without the `+` (`+1 (555) 010-9999` → `15550109999`).
///
/// A number written internationally (`+…` or `00…`) keeps its country code.
/// Otherwise, if `default_country_code` is given (digits, e.g. `"1"`, `"44"`),
/// leading trunk zeros are removed and the code is prepended
/// (`07700 900123` with `44` → `447700900123`); without it the digits are
/// returned as written.
pub fn phone_digits(raw: &str, default_country_code: Option<&str>) -> String {
    let raw = raw.trim();
    let digits: String = raw.chars().filter(char::is_ascii_digit).collect();
    if raw.starts_with('+') {
        return digits;
    }
    if let Some(rest) = digits.strip_prefix("00") {
        return rest.to_string();
    }
    match default_country_code {
        Some(cc) if !digits.is_empty() => {
            let cc: String = cc.chars().filter(char::is_ascii_digit).collect();
            format!("{cc}{}", digits.trim_start_matches('0'))
        }
        _ => digits,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises() {
        assert_eq!(email("  Jane.Doe@Example.COM "), "jane.doe@example.com");
        assert_eq!(name(" Élodie "), "élodie");
        assert_eq!(phone_digits("+1 (555) 010-9999", None), "15550109999");
        assert_eq!(phone_digits("0044 20 7946 0958", Some("1")), "442079460958");
        assert_eq!(phone_digits("07700 900123", Some("+44")), "447700900123");
        assert_eq!(phone_digits("555-010-9999", Some("1")), "15550109999");
        assert_eq!(phone_digits("555-010-9999", None), "5550109999");
        assert_eq!(phone_digits("n/a", Some("1")), "");
    }
}
