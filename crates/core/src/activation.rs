//! The activations that turn a classifier's logits into probabilities, defined once for the
//! server, the remote client, step rewards and the browser.

/// The logistic function `1 / (1 + e^-x)`. Computed in f64: `e^-x` overflows f32 from
/// x < -88, where the f64 result still rounds to the right (tiny) f32.
pub fn sigmoid(x: f32) -> f32 {
    (1.0 / (1.0 + (-f64::from(x)).exp())) as f32
}

/// `e^(x_i - max) / Σ_j e^(x_j - max)`: subtracting the largest logit keeps every exponent at
/// most 0, so large logits cannot overflow. Empty in, empty out.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|x| (x - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// A classifier's probabilities the way vLLM (`use_activation`) and TEI (without
/// `raw_scores`) compute them: sigmoid for one label, softmax over several.
pub fn label_probabilities(logits: &[f32]) -> Vec<f32> {
    match logits {
        [x] => vec![sigmoid(*x)],
        _ => softmax(logits),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigmoid_values_and_extremes() {
        assert_eq!(sigmoid(0.0), 0.5);
        assert!((sigmoid(2.0) - 0.880_797).abs() < 1e-6);
        assert!((sigmoid(-2.0) - 0.119_203).abs() < 1e-6);
        assert_eq!(sigmoid(100.0), 1.0);
        let tiny = sigmoid(-100.0);
        assert!(tiny > 0.0 && tiny < 1e-40, "{tiny}: e^100 overflows f32, not f64");
    }

    #[test]
    fn softmax_sums_to_one_and_survives_large_logits() {
        let p = softmax(&[1.0, 2.0, 3.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!((p[2] - 0.665_241).abs() < 1e-6);
        assert_eq!(softmax(&[1000.0, 1000.0]), [0.5, 0.5]);
        assert!(softmax(&[]).is_empty());
    }

    #[test]
    fn one_label_gets_sigmoid_several_get_softmax() {
        assert_eq!(label_probabilities(&[2.0]), [sigmoid(2.0)]);
        assert_eq!(label_probabilities(&[0.0, 0.0]), [0.5, 0.5]);
    }
}
