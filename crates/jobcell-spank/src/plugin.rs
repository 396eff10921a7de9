//! The SPANK glue: exported symbols and hooks. `spank_*` and `slurm_*` functions resolve from
//! the process that loads the plugin (srun, sbatch, salloc, slurmd, slurmstepd); libslurm is
//! deliberately not linked. Every hook catches panics: unwinding into C is undefined.

#![allow(non_upper_case_globals)]

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::OnceLock;

use crate::{check_image_name, effective_image, prepare_job_dir, remove_job_dir, Settings};

#[allow(dead_code)]
mod consts {
    include!(concat!(env!("OUT_DIR"), "/slurm_consts.rs"));
}
use consts::*;

type Spank = *mut c_void;
type OptCb = unsafe extern "C" fn(c_int, *const c_char, c_int) -> c_int;

/// `struct spank_option` of spank.h.
#[repr(C)]
struct SpankOption {
    name: *const c_char,
    arginfo: *const c_char,
    usage: *const c_char,
    has_arg: c_int,
    val: c_int,
    cb: Option<OptCb>,
}

const ESPANK_SUCCESS: c_int = 0;

extern "C" {
    fn spank_context() -> c_int;
    fn spank_option_register(sp: Spank, opt: *mut SpankOption) -> c_int;
    fn spank_option_getopt(sp: Spank, opt: *mut SpankOption, optarg: *mut *mut c_char) -> c_int;
    fn spank_get_item(sp: Spank, item: c_int, ...) -> c_int;
    fn spank_setenv(sp: Spank, var: *const c_char, val: *const c_char, overwrite: c_int) -> c_int;
    fn spank_strerror(err: c_int) -> *const c_char;
    fn slurm_error(fmt: *const c_char, ...);
    fn slurm_verbose(fmt: *const c_char, ...);
}

#[no_mangle]
pub static plugin_name: [u8; 8] = *b"jobcell\0";
#[no_mangle]
pub static plugin_type: [u8; 6] = *b"spank\0";
#[no_mangle]
pub static plugin_version: u32 = SLURM_VERSION_NUMBER;
#[no_mangle]
pub static spank_plugin_version: u32 = 1;

static SETTINGS: OnceLock<Settings> = OnceLock::new();

/// The option table entry; spank_option_register copies it, getopt looks it up by name.
static mut OPTION: SpankOption = SpankOption {
    name: c"jobcell-image".as_ptr(),
    arginfo: c"NAME".as_ptr(),
    usage: c"Run the tasks in the jobcell image NAME ('host': no image, even if the site sets a default).".as_ptr(),
    has_arg: 1,
    val: 0,
    cb: Some(option_cb),
};

fn option_ptr() -> *mut SpankOption {
    std::ptr::addr_of_mut!(OPTION)
}

fn log_error(msg: &str) {
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    // SAFETY: slurm_error is a printf-style logger: the format takes exactly one %s, given a NUL-
    // terminated string alive across the call.
    unsafe { slurm_error(c"jobcell: %s".as_ptr(), c.as_ptr()) };
}

fn log_verbose(msg: &str) {
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    // SAFETY: slurm_verbose is a printf-style logger: the format takes exactly one %s, given a NUL-
    // terminated string alive across the call.
    unsafe { slurm_verbose(c"jobcell: %s".as_ptr(), c.as_ptr()) };
}

fn spank_err(what: &str, rc: c_int) -> String {
    // SAFETY: spank_strerror takes any error code and returns a pointer to a static string (or
    // null).
    let s = unsafe { spank_strerror(rc) };
    let s = if s.is_null() {
        format!("error {rc}")
    } else {
        // SAFETY: a non-null spank_strerror result is a NUL-terminated static string.
        unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned()
    };
    format!("{what}: {s}")
}

/// Run a hook body; an error is logged and fails the hook, a panic too.
fn hook(name: &str, f: impl FnOnce() -> Result<(), String>) -> c_int {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            log_error(&e);
            -1
        }
        Err(_) => {
            log_error(&format!("{name}: internal error (panic)"));
            -1
        }
    }
}

fn args(ac: c_int, av: *mut *mut c_char) -> Vec<String> {
    (0..ac.max(0) as usize)
        .filter_map(|i| {
            // SAFETY: slurmd passes `av` with `ac` valid entries, and `i` < `ac`.
            let p = unsafe { *av.add(i) };
            // SAFETY: a non-null argv entry from slurmd is a NUL-terminated string that lives for
            // the plugin call.
            (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
        })
        .collect()
}

fn settings(ac: c_int, av: *mut *mut c_char) -> Result<&'static Settings, String> {
    if let Some(s) = SETTINGS.get() {
        return Ok(s);
    }
    let s = Settings::parse(&args(ac, av)).map_err(|e| e.to_string())?;
    Ok(SETTINGS.get_or_init(|| s))
}

unsafe fn item_u32(sp: Spank, item: c_int, what: &str) -> Result<u32, String> {
    let mut v: u32 = 0;
    let rc = spank_get_item(sp, item, &mut v as *mut u32);
    if rc != ESPANK_SUCCESS {
        return Err(spank_err(what, rc));
    }
    Ok(v)
}

unsafe extern "C" fn option_cb(_val: c_int, optarg: *const c_char, _remote: c_int) -> c_int {
    if optarg.is_null() {
        log_error("--jobcell-image needs an image name");
        return -1;
    }
    let name = CStr::from_ptr(optarg).to_string_lossy();
    match check_image_name(&name) {
        Ok(()) => 0,
        Err(e) => {
            log_error(&format!("--jobcell-image: {e}"));
            -1
        }
    }
}

#[no_mangle]
pub unsafe extern "C" fn slurm_spank_init(sp: Spank, ac: c_int, av: *mut *mut c_char) -> c_int {
    hook("init", || {
        settings(ac, av)?;
        let ctx = spank_context();
        if [S_CTX_LOCAL, S_CTX_REMOTE, S_CTX_ALLOCATOR].contains(&ctx) {
            let rc = spank_option_register(sp, option_ptr());
            if rc != ESPANK_SUCCESS {
                return Err(spank_err("registering --jobcell-image", rc));
            }
        }
        Ok(())
    })
}

/// Root, in the task, before it becomes the user: the per-job dir.
#[no_mangle]
pub unsafe extern "C" fn slurm_spank_task_init_privileged(
    sp: Spank,
    ac: c_int,
    av: *mut *mut c_char,
) -> c_int {
    hook("task_init_privileged", || {
        let s = settings(ac, av)?;
        let uid = item_u32(sp, S_JOB_UID, "job uid")?;
        if uid == 0 {
            return Ok(()); // root's tasks are the admin's: not isolated
        }
        let gid = item_u32(sp, S_JOB_GID, "job gid")?;
        let jobid = item_u32(sp, S_JOB_ID, "job id")?;
        prepare_job_dir(&s.scratch, jobid, uid, gid).map_err(|e| e.to_string())?;
        Ok(())
    })
}

/// The user, in the task, right before slurmstepd's execve: exec jobcell instead.
#[no_mangle]
pub unsafe extern "C" fn slurm_spank_task_init(
    sp: Spank,
    ac: c_int,
    av: *mut *mut c_char,
) -> c_int {
    hook("task_init", || {
        let s = settings(ac, av)?;
        let uid = item_u32(sp, S_JOB_UID, "job uid")?;
        if uid == 0 {
            return Ok(());
        }
        let jobid = item_u32(sp, S_JOB_ID, "job id")?;
        let stepid = item_u32(sp, S_JOB_STEPID, "step id")?;
        let mut optarg: *mut c_char = std::ptr::null_mut();
        let user_image = (spank_option_getopt(sp, option_ptr(), &mut optarg) == ESPANK_SUCCESS
            && !optarg.is_null())
        .then(|| CStr::from_ptr(optarg).to_string_lossy().into_owned());
        let image = effective_image(user_image.as_deref(), s.image.as_deref());

        let jobcell = CString::new(s.jobcell.as_os_str().as_encoded_bytes())
            .map_err(|_| "jobcell= path contains a NUL byte".to_string())?;
        if libc::access(jobcell.as_ptr(), libc::X_OK) != 0 {
            return Err(format!(
                "jobcell binary {} is not executable by uid {uid}: {}",
                s.jobcell.display(),
                std::io::Error::last_os_error()
            ));
        }
        let mut argc: c_int = 0;
        let mut argv: *mut *mut c_char = std::ptr::null_mut();
        let rc = spank_get_item(
            sp,
            S_JOB_ARGV,
            &mut argc as *mut c_int,
            &mut argv as *mut *mut *mut c_char,
        );
        if rc != ESPANK_SUCCESS {
            return Err(spank_err("task argv", rc));
        }
        if argc < 1 || argv.is_null() || (*argv).is_null() {
            return Err("the task has no command".into());
        }
        let argv0 = CStr::from_ptr(*argv).to_owned();
        let scratch = s.scratch.join(crate::job_dir_name(jobid));
        let batch = stepid == SLURM_BATCH_SCRIPT;
        let mut vars = vec![("ARGV0".to_string(), argv0.to_string_lossy().into_owned())];
        vars.extend(s.task_env(&scratch, image.as_deref(), batch));
        for (k, v) in vars {
            let k = CString::new(format!("JOBCELL_SPANK_{k}")).expect("no NUL");
            let v = CString::new(v).map_err(|_| format!("{k:?} contains a NUL byte"))?;
            let rc = spank_setenv(sp, k.as_ptr(), v.as_ptr(), 1);
            if rc != ESPANK_SUCCESS {
                return Err(spank_err(&format!("setting {}", k.to_string_lossy()), rc));
            }
        }
        // slurmstepd execs task->argv[0], the same array for every task but --multi-prog.
        // The old string stays owned by slurmstepd; ours lives until exec.
        *argv = jobcell.into_raw();
        log_verbose(&format!(
            "job {jobid} step {stepid:#x}: task runs through {} ({})",
            s.jobcell.display(),
            image.as_deref().unwrap_or("host view")
        ));
        Ok(())
    })
}

/// Root, in slurmd's epilog at the job's end on this node: remove the per-job dir.
#[no_mangle]
pub unsafe extern "C" fn slurm_spank_job_epilog(
    sp: Spank,
    ac: c_int,
    av: *mut *mut c_char,
) -> c_int {
    let rc = hook("job_epilog", || {
        let s = settings(ac, av)?;
        let jobid = item_u32(sp, S_JOB_ID, "job id")?;
        remove_job_dir(&s.scratch, jobid).map_err(|e| e.to_string())
    });
    // A leftover dir is logged, but must not drain the node (a failing epilog does).
    let _ = rc;
    0
}
