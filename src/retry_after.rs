//! `Retry-After`, as model providers and platforms send it: whole or fractional
//! seconds (Shopify sends `2.0`), or an HTTP date.

use std::time::Duration;

/// Parses `Retry-After`: whole or fractional seconds, or an HTTP date.
pub fn parse(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let wait = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_all_three_forms() {
        assert_eq!(parse("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse("2.5"), Some(Duration::from_millis(2500)));
        assert_eq!(parse("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
        let later = (chrono::Utc::now() + chrono::Duration::seconds(90)).to_rfc2822();
        let d = parse(&later).unwrap();
        assert!(
            d > Duration::from_secs(80) && d <= Duration::from_secs(90),
            "{d:?}"
        );
        assert_eq!(parse("soon"), None);
    }
}
