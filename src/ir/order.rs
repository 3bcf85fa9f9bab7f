//! One stable sort of positions for every caller that orders indices by a comparison of its own
//! (pruning, Unique, graph passes): a sort per comparator closure is a few KiB of machine code
//! each, and the C-ABI library has a size budget.

use std::cmp::Ordering;

/// Sorts the positions `order` by `cmp`, stably (equal ones keep their order).
#[inline(never)]
pub fn sort_positions(order: &mut [usize], cmp: &dyn Fn(usize, usize) -> Ordering) {
    order.sort_by(|&a, &b| cmp(a, b));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_sort_stably_by_the_comparison() {
        let keys = [3, 1, 2, 1, 3, 0];
        let mut order: Vec<usize> = (0..keys.len()).collect();
        sort_positions(&mut order, &|a, b| keys[a].cmp(&keys[b]));
        assert_eq!(order, [5, 1, 3, 2, 0, 4]);
        sort_positions(&mut order, &|a, b| keys[b].cmp(&keys[a]));
        assert_eq!(order, [0, 4, 2, 1, 3, 5]);
    }
}
