//! Reading a node's metrics from its Prometheus text ([`Replica::metrics_text`](crate::Replica::metrics_text)).

/// The value of the first sample of `name` (labels ignored) in Prometheus text; 0 if
/// absent.
pub fn metric_value(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_values_are_found_by_exact_name() {
        let text = "# HELP x\nkeel_a_count{node=\"1\"} 12\nkeel_a_count_more 3\nkeel_b 4.5\n";
        assert_eq!(metric_value(text, "keel_a_count"), 12.0);
        assert_eq!(metric_value(text, "keel_b"), 4.5);
        assert_eq!(metric_value(text, "keel_c"), 0.0);
    }
}
