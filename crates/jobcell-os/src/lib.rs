//! jobcell's one layer over the filesystem calls that a job or an image must not be able to
//! redirect: everything goes through a directory descriptor and a single name, with
//! `O_NOFOLLOW`/`AT_SYMLINK_NOFOLLOW`, and [`remove_tree_at`] is the only tree removal in the
//! workspace (scratch dirs, SPANK job dirs, image trees and staging dirs all use it).

pub mod dir;
pub mod tree;

pub use dir::{cstr, ident_at, open_dir, open_dir_at, path_cstr, read_dir_names, Ident, CWD};
pub use tree::{remove_tree_at, RemoveTreeError, MAX_OPEN_DIRS};
