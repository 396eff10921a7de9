//! A guard on how much stack parsing and evaluation may use.
//!
//! Counting levels alone cannot promise a hostile expression or ad never overflows the stack:
//! what one level costs depends on its kind and on the build. So the parser and the evaluator
//! also measure the stack they have used (the distance between a local at the start and one
//! now) and give up past [`STACK_BUDGET`], with a parse error or an `error` value.

/// The most stack one parse or evaluation uses, in bytes.
pub const STACK_BUDGET: usize = 512 * 1024;

/// Where the stack is now: the address of a local (stacks grow down on every target jobcell
/// runs on; the distance is taken either way round).
#[inline(always)]
fn stack_position() -> usize {
    let marker = 0u8;
    std::hint::black_box(&marker) as *const u8 as usize
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct StackGuard {
    start: usize,
}

impl StackGuard {
    pub(crate) fn new() -> StackGuard {
        StackGuard {
            start: stack_position(),
        }
    }

    pub(crate) fn exhausted(&self) -> bool {
        self.start.abs_diff(stack_position()) > STACK_BUDGET
    }
}
