//! How rows are grouped into forward passes: by length, and with prefix reuse by shared prompt.

use crate::plan::shared_prefix_len;

/// How to batch `rows`, `batch_size` at most each: by length, longest first, so that batches
/// carry little padding. With prefix reuse (`min_shared` tokens), rows sharing that many leading
/// tokens (sorting the ids puts them side by side, where [`shared_prompt_runs`] finds them) are
/// batched together, so each batch computes its prompt once; the remaining
/// rows are batched by length.
pub(crate) fn batches(rows: &[&[u32]], batch_size: usize, min_shared: Option<usize>) -> Vec<Vec<usize>> {
    let by_length = |mut v: Vec<usize>| {
        v.sort_by_key(|&i| std::cmp::Reverse(rows[i].len()));
        v
    };
    let chunked = |v: Vec<usize>| v.chunks(batch_size).map(<[usize]>::to_vec).collect::<Vec<_>>();
    let all: Vec<usize> = (0..rows.len()).collect();
    let Some(min) = min_shared else { return chunked(by_length(all)) };
    let mut sorted = all;
    sorted.sort_by(|&a, &b| rows[a].cmp(rows[b]));
    let sorted_rows: Vec<&[u32]> = sorted.iter().map(|&i| rows[i]).collect();
    let runs: Vec<Vec<usize>> =
        shared_prompt_runs(&sorted_rows, Some(min), usize::MAX).into_iter().map(|r| sorted[r].to_vec()).collect();
    let (shared, single): (Vec<_>, Vec<_>) = runs.into_iter().partition(|r| r.len() > 1);
    let mut out: Vec<Vec<usize>> = shared.into_iter().flat_map(|r| chunked(by_length(r))).collect();
    out.extend(chunked(by_length(single.concat())));
    out
}

/// Consecutive rows that share at least `min_shared` leading tokens (responses to one prompt,
/// in input order), `max` rows at most per run; every other row alone, and every row alone
/// without prefix reuse. For front ends that score a few rows at a time (the browser).
pub fn shared_prompt_runs(rows: &[&[u32]], min_shared: Option<usize>, max: usize) -> Vec<std::ops::Range<usize>> {
    let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
    for i in 0..rows.len() {
        match (runs.last_mut(), min_shared) {
            (Some(r), Some(min)) if r.len() < max && shared_prefix_len(&[rows[r.start], rows[i]]) >= min => {
                r.end = i + 1
            }
            _ => runs.push(i..i + 1),
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::{batches, shared_prompt_runs};

    #[test]
    fn runs_of_answers_to_one_prompt_in_input_order() {
        let p: Vec<u32> = (0..40).collect();
        let with = |t: u32| p.iter().copied().chain([t]).collect::<Vec<u32>>();
        let rows = [with(1), with(2), vec![5; 50], with(3), with(4), with(5), with(6)];
        let refs: Vec<&[u32]> = rows.iter().map(|r| r.as_slice()).collect();
        assert_eq!(shared_prompt_runs(&refs, Some(32), 3), vec![0..2, 2..3, 3..6, 6..7]);
        assert_eq!(shared_prompt_runs(&refs, None, 3).len(), rows.len());
        assert_eq!(shared_prompt_runs(&refs, Some(41), 3).len(), rows.len());
    }

    #[test]
    fn answers_to_one_prompt_share_batches_and_the_rest_go_by_length() {
        let p: Vec<u32> = (0..40).collect();
        let q: Vec<u32> = (100..140).collect();
        let row = |prefix: &[u32], tail: &[u32]| prefix.iter().chain(tail).copied().collect::<Vec<u32>>();
        let rows = [
            row(&p, &[1]),
            vec![7, 8],
            row(&q, &[1, 2, 3]),
            row(&p, &[2, 2]),
            vec![9; 50],
            row(&q, &[4]),
            row(&p, &[3, 3, 3]),
        ];
        let refs: Vec<&[u32]> = rows.iter().map(|r| r.as_slice()).collect();
        let got = batches(&refs, 2, Some(32));
        // p's three answers (longest first, in batches of 2), q's two, then the others by length.
        assert_eq!(got, vec![vec![6, 3], vec![0], vec![2, 5], vec![4, 1]]);
        let off = batches(&refs, 3, None);
        assert_eq!(off, vec![vec![4, 2, 6], vec![3, 0, 5], vec![1]]);
        let mut all: Vec<usize> = got.concat();
        all.sort();
        assert_eq!(all, (0..rows.len()).collect::<Vec<_>>());
    }
}
