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
    crate::activation::sigmoid(a - b)
}

/// The best of `rewards` (the first among equals, as `ranking` orders them) and the
/// probability that it beats the runner-up (`preference_probability`); with one reward, its
/// sigmoid. What annotation tools show as the model's confidence.
pub fn best_with_confidence(rewards: &[f32]) -> (usize, f32) {
    let order = ranking(rewards);
    let best = order[0];
    let p = match order.get(1) {
        Some(&r) => preference_probability(rewards[best], rewards[r]),
        None => crate::activation::sigmoid(rewards[best]),
    };
    (best, p)
}

/// Ranks (1-based) with ties given their average rank, as Spearman's rho needs.
fn average_ranks(v: &[f32]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut ranks = vec![0.0; v.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        let r = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            ranks[k] = r;
        }
        i = j + 1;
    }
    ranks
}

/// Spearman's rank correlation of two score lists of equal length (None if either is constant
/// or shorter than 2).
pub fn spearman(a: &[f32], b: &[f32]) -> Option<f64> {
    assert_eq!(a.len(), b.len(), "spearman: lengths differ");
    if a.len() < 2 {
        return None;
    }
    let (ra, rb) = (average_ranks(a), average_ranks(b));
    let n = ra.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let cov: f64 = ra.iter().zip(&rb).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = ra.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = rb.iter().map(|y| (y - mb).powi(2)).sum();
    (va > 0.0 && vb > 0.0).then(|| cov / (va * vb).sqrt())
}

/// Kendall's tau-b of two score lists (None if either is constant or shorter than 2).
pub fn kendall_tau_b(a: &[f32], b: &[f32]) -> Option<f64> {
    assert_eq!(a.len(), b.len(), "kendall: lengths differ");
    let (mut concordant, mut discordant, mut ties_a, mut ties_b) = (0i64, 0i64, 0i64, 0i64);
    for i in 0..a.len() {
        for j in i + 1..a.len() {
            let (da, db) = (a[i] - a[j], b[i] - b[j]);
            match (da == 0.0, db == 0.0) {
                (true, true) => {}
                (true, false) => ties_a += 1,
                (false, true) => ties_b += 1,
                _ if (da > 0.0) == (db > 0.0) => concordant += 1,
                _ => discordant += 1,
            }
        }
    }
    let n1 = (concordant + discordant + ties_a) as f64;
    let n2 = (concordant + discordant + ties_b) as f64;
    (n1 > 0.0 && n2 > 0.0).then(|| (concordant - discordant) as f64 / (n1 * n2).sqrt())
}

/// Over all pairs (i, j) that `reference` does not tie: (pairs ordered the same way, pairs).
pub fn pair_order_agreement(reference: &[f32], candidate: &[f32]) -> (usize, usize) {
    assert_eq!(reference.len(), candidate.len(), "pair agreement: lengths differ");
    let (mut same, mut total) = (0, 0);
    for i in 0..reference.len() {
        for j in i + 1..reference.len() {
            let dr = reference[i] - reference[j];
            if dr == 0.0 {
                continue;
            }
            total += 1;
            same += usize::from((dr > 0.0) == (candidate[i] - candidate[j] > 0.0));
        }
    }
    (same, total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_correlations() {
        let a = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(spearman(&a, &[10.0, 20.0, 30.0, 40.0]), Some(1.0));
        assert_eq!(spearman(&a, &[4.0, 3.0, 2.0, 1.0]), Some(-1.0));
        assert_eq!(kendall_tau_b(&a, &[4.0, 3.0, 2.0, 1.0]), Some(-1.0));
        // One swapped adjacent pair out of 6: tau = (5 - 1) / 6.
        assert!((kendall_tau_b(&a, &[1.0, 3.0, 2.0, 4.0]).unwrap() - 4.0 / 6.0).abs() < 1e-12);
        // scipy.stats.spearmanr([1,2,3,4],[1,3,2,4]) = 0.8
        assert!((spearman(&a, &[1.0, 3.0, 2.0, 4.0]).unwrap() - 0.8).abs() < 1e-12);
        assert_eq!(spearman(&a, &[1.0; 4]), None);
        assert_eq!(pair_order_agreement(&a, &[1.0, 3.0, 2.0, 4.0]), (5, 6));
    }

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

    #[test]
    fn the_best_and_its_margin_over_the_runner_up() {
        let (best, p) = best_with_confidence(&[0.5, 2.0, 1.0, 2.0]);
        assert_eq!(best, 1, "the first of equals");
        assert_eq!(p, 0.5, "tied with the runner-up");
        let (best, p) = best_with_confidence(&[-1.0, 1.0]);
        assert_eq!((best, p), (1, preference_probability(1.0, -1.0)));
        assert_eq!(best_with_confidence(&[0.0]), (0, 0.5));
    }
}
