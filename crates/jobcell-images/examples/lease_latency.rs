//! How long `jobcell run --image` spends in the image store: open + lease (+ drop), the part
//! of the launch that a run without `--image` does not do.
//!
//!   cargo run --release -p jobcell-images --example lease_latency [ITERATIONS]

use std::collections::BTreeMap;
use std::time::Instant;

use jobcell_images::{ImageStore, ImportOptions, ImportSource};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let tmp = tempfile::tempdir().unwrap();
    let (state, images) = (tmp.path().join("state"), tmp.path().join("images"));
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::write(src.join("etc/os-release"), "ID=bench\n").unwrap();
    {
        let s = ImageStore::open(&state, &images, BTreeMap::new()).unwrap();
        s.add("bench", ImportSource::Path(src), &ImportOptions::default())
            .unwrap();
        for i in 0..20 {
            let d = tmp.path().join(format!("src{i}"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("f"), format!("{i}")).unwrap();
            s.add(
                &format!("other{i}"),
                ImportSource::Path(d),
                &ImportOptions::default(),
            )
            .unwrap();
        }
    }
    let mut open_us = Vec::new();
    let mut total_us = Vec::new();
    let mut close_us = Vec::new();
    for _ in 0..n {
        let t0 = Instant::now();
        let s = ImageStore::open(&state, &images, BTreeMap::new()).unwrap();
        let t1 = Instant::now();
        let lease = s.lease("bench", 0).unwrap();
        let t2 = Instant::now();
        drop(s); // the launcher needs only the lease once it has it
        let t3 = Instant::now();
        drop(lease);
        close_us.push((t3 - t2).as_secs_f64() * 1e6);
        open_us.push((t1 - t0).as_secs_f64() * 1e6);
        total_us.push((t2 - t0).as_secs_f64() * 1e6);
    }
    open_us.sort_by(f64::total_cmp);
    total_us.sort_by(f64::total_cmp);
    close_us.sort_by(f64::total_cmp);
    let med = |v: &[f64]| v[v.len() / 2];
    let p90 = |v: &[f64]| v[v.len() * 9 / 10];
    println!(
        "{n} iterations, 21 images in the store: open median {:.0} us; open+lease median {:.0} us, p90 {:.0} us; closing the store median {:.0} us",
        med(&open_us),
        med(&total_us),
        p90(&total_us),
        med(&close_us)
    );
    // Image trees are read-only; make them removable for the temp dir.
    let _ = std::process::Command::new("chmod")
        .arg("-R")
        .arg("u+w")
        .arg(tmp.path())
        .status();
}
