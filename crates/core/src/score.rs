//! Score math shared by the CLI, server and browser.

/// Indices of `scores` from best (highest) to worst; ties keep input order.
/// NaN sorts last so that a broken score never ranks first.
pub fn ranking(scores: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| {
        let (x, y) = (scores[a], scores[b]);
        match (x.is_nan(), y.is_nan()) {
            (true, true) => std::cmp::Ordering::Equal,
            (true, false) => std::cmp::Ordering::Greater,
            (false, true) => std::cmp::Ordering::Less,
            _ => y.partial_cmp(&x).unwrap(),
        }
    });
    idx
}

/// Bradley-Terry probability that the response scored `a` is preferred to the one scored `b`:
/// `sigmoid(a - b)`, the model behind how reward models are trained.
pub fn preference_probability(a: f32, b: f32) -> f32 {
    let d = (a - b) as f64;
    (1.0 / (1.0 + (-d).exp())) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranking_is_descending_and_stable() {
        assert_eq!(ranking(&[0.5, 2.0, -1.0, 2.0]), vec![1, 3, 0, 2]);
        assert_eq!(ranking(&[f32::NAN, 1.0]), vec![1, 0]);
        assert!(ranking(&[]).is_empty());
    }

    #[test]
    fn preference_probability_is_sigmoid_of_difference() {
        assert!((preference_probability(1.0, 1.0) - 0.5).abs() < 1e-7);
        assert!((preference_probability(2.0, 0.0) - 0.880_797).abs() < 1e-6);
        assert!((preference_probability(0.0, 2.0) - 0.119_203).abs() < 1e-6);
    }
}
