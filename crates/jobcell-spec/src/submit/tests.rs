//! Unit tests: features, and every malformed-file error with its line number.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use super::*;

struct Fake {
    files: HashMap<String, String>,
    globs: Vec<String>,
    env: Vec<(String, String)>,
}

impl Fake {
    fn new() -> Self {
        Fake {
            files: HashMap::from([("items.txt".to_string(), "x 1\ny 2\n".to_string())]),
            globs: vec!["a.dat".into(), "b.dat".into(), "sub/".into()],
            env: vec![
                ("HOME".into(), "/home/u".into()),
                ("PATH".into(), "/bin".into()),
            ],
        }
    }
}

impl SubmitEnv for Fake {
    fn read_file(&self, path: &Path) -> io::Result<String> {
        self.files
            .get(path.to_str().unwrap())
            .cloned()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }
    fn glob(&self, pattern: &str) -> Vec<String> {
        self.globs
            .iter()
            .filter(|g| wildcard_match(pattern, g.trim_end_matches('/')))
            .cloned()
            .collect()
    }
    fn env(&self, name: &str) -> Option<String> {
        self.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
    fn env_vars(&self) -> Vec<(String, String)> {
        self.env.clone()
    }
    fn cwd(&self) -> PathBuf {
        PathBuf::from("/s")
    }
    fn is_dir(&self, path: &Path) -> bool {
        path == Path::new("/s/sub") || path == Path::new("/tmp")
    }
}

fn parse(text: &str) -> Result<Submission, SubmitError> {
    parse_submit(text, &Fake::new(), &SubmitOptions { cluster_id: 7 })
}

fn err(text: &str) -> SubmitError {
    parse(text).expect_err("should be refused")
}

#[test]
fn basic_job() {
    let s = parse(
        "# a comment\nUniverse = vanilla\nExecutable = bin/x\nARGUMENTS = \"a 'b c'\"\n\
         environment = A=1;B=2\nrequest_memory = 2G\nrequest_disk = 1000\nrequest_cpus = 2\n\
         initialdir = sub\noutput = out.$(Cluster).$(Process)\nlog = /tmp/l\npriority = -3\n\
         hold = True\n+Foo = \"bar\"\nMY.Num = 3\njobcell_image = alma9\nqueue 2\n",
    )
    .unwrap();
    assert_eq!(s.jobs.len(), 2);
    let j = &s.jobs[1];
    assert_eq!(j.proc_id, 1);
    assert_eq!(j.executable, "/s/bin/x");
    assert_eq!(j.argv, ["/s/bin/x", "a", "b c"]);
    assert_eq!(j.environment.get("B").map(String::as_str), Some("2"));
    assert_eq!(j.initialdir, "/s/sub");
    assert_eq!(j.output.as_deref(), Some("/s/sub/out.7.1"));
    assert_eq!(j.log.as_deref(), Some("/tmp/l"));
    assert_eq!(
        (j.request_cpus, j.request_memory, j.request_disk),
        (2.0, Some(2048), Some(1000))
    );
    assert_eq!((j.priority, j.held), (-3, true));
    assert_eq!(j.image.as_deref(), Some("alma9"));
    assert_eq!(
        j.custom_attributes["Foo"],
        CustomValue::String("bar".into())
    );
    assert_eq!(j.custom_attributes["Num"], CustomValue::Int(3));
    let spec = j.to_job_spec();
    assert_eq!(spec.argv, j.argv);
    assert_eq!(spec.resources.memory, Some(2048 << 20));
    assert_eq!(spec.resources.cpus, Some(2.0));
    assert_eq!(spec.resources.disk, Some(1000 << 10));
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
}

#[test]
fn queue_forms() {
    let s =
        parse("executable=x\narguments=$(Item) $(ItemIndex) $(Step)\nqueue 2 in (a, b)\n").unwrap();
    let a: Vec<_> = s.jobs.iter().map(|j| j.arguments.join(" ")).collect();
    assert_eq!(a, ["a 0 0", "a 0 1", "b 1 0", "b 1 1"]);
    let s = parse("executable=x\narguments=$(x) $(y)\nqueue x,y from items.txt\n").unwrap();
    assert_eq!(s.jobs[1].arguments, ["y", "2"]);
    let s = parse("executable=x\narguments=$(a)|$(b)\nqueue a b from (\n 1 2 3\n\n 4\n)\nqueue\n")
        .unwrap();
    assert_eq!(s.jobs.len(), 3);
    assert_eq!(s.jobs[0].arguments, ["1|2", "3"]);
    assert_eq!(s.jobs[1].arguments, ["4|"]);
    assert_eq!(s.jobs[2].proc_id, 2);
    let s =
        parse("executable=x\narguments=$(Item)\nqueue matching files *\nqueue f matching dirs *\n")
            .unwrap();
    let a: Vec<_> = s.jobs.iter().map(|j| j.arguments.join(" ")).collect();
    assert_eq!(a, ["a.dat", "b.dat", ""]);
    let s = parse("executable=x\narguments=$(Item)\nqueue in (\n a b\n c\n)\n").unwrap();
    assert_eq!(s.jobs.len(), 3);
}

#[test]
fn macros() {
    let s = parse(
        "executable=/bin/$(prog:echo)\nA = $(B)\nB = b\nC = 1\nC = $(C) 2\n\
         arguments = $(a) $(C) $ENV(HOME) $ENV(NOPE:d) $(DOLLAR)(x) $$(y) $RANDOM_INTEGER(5,5) $Fn(f) $Fx(f)\n\
         f = /p/q.txt\nqueue\n",
    )
    .unwrap();
    assert_eq!(s.jobs[0].executable, "/bin/echo");
    assert_eq!(
        s.jobs[0].arguments,
        ["b", "1", "2", "/home/u", "d", "$(x)", "$$(y)", "5", "q", ".txt"]
    );
}

#[test]
fn getenv_forms() {
    let s = parse("executable=x\ngetenv = true\nenvironment = \"HOME=/x\"\nqueue\n").unwrap();
    assert_eq!(s.jobs[0].environment["HOME"], "/x");
    assert_eq!(s.jobs[0].environment["PATH"], "/bin");
    let s = parse("executable=x\ngetenv = HO*\nqueue\n").unwrap();
    assert_eq!(s.jobs[0].environment.len(), 1);
}

#[test]
fn continuation_and_case() {
    let s = parse("EXECUTABLE = x\narguments = a \\\n  b\\\nc\nQueue\n").unwrap();
    assert_eq!(s.jobs[0].arguments, ["a", "bc"]);
}

#[test]
fn warnings_name_lines() {
    let s =
        parse("executable=x\nrank = Memory > 1\nfoo_bar = 3\narguments=$(nope)\nqueue\n").unwrap();
    let w: Vec<String> = s.warnings.iter().map(|w| w.to_string()).collect();
    assert!(w[0].starts_with("line 2: 'rank'"), "{w:?}");
    assert!(w[1].starts_with("line 3: 'foo_bar'"), "{w:?}");
    assert!(w[2].starts_with("line 4: $(nope) is not defined"), "{w:?}");
}

#[test]
fn batch_name_is_the_jobs_batch_name() {
    for cmd in ["batch_name", "job_batch_name"] {
        let s = parse(&format!(
            "executable = x\n{cmd} = sweep $(Cluster)\nqueue 2\n"
        ))
        .unwrap();
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        for j in &s.jobs {
            assert_eq!(
                j.custom_attributes["JobBatchName"],
                CustomValue::String("sweep 7".into())
            );
            assert!(j
                .classad()
                .contains(&("JobBatchName".into(), "\"sweep 7\"".into())));
        }
    }
}

fn assert_line(text: &str, line: usize, needle: &str) {
    let e = err(text);
    assert_eq!(e.line(), Some(line), "{e}");
    let msg = e.to_string();
    assert!(msg.starts_with(&format!("line {line}: ")), "{msg}");
    assert!(msg.contains(needle), "'{msg}' lacks '{needle}'");
}

#[test]
fn errors_carry_line_numbers() {
    assert_line(
        "executable=x\n\narguments = \"a b\nqueue\n",
        3,
        "unterminated double quote",
    );
    assert_line(
        "executable=x\narguments = \"a\" b\nqueue\n",
        2,
        "after the closing double quote",
    );
    assert_line(
        "executable=x\narguments = \"a 'b\"\nqueue\n",
        2,
        "unbalanced single quote",
    );
    assert_line(
        "executable=x\narguments = a \"b\nqueue\n",
        2,
        "unescaped double quote",
    );
    assert_line("executable=x\nenvironment = A\nqueue\n", 2, "missing '='");
    assert_line(
        "executable=x\nenvironment = \"=1\"\nqueue\n",
        2,
        "missing variable name",
    );
    assert_line(
        "executable=x\nrequest_memory = 12X\nqueue\n",
        2,
        "not a size",
    );
    assert_line(
        "executable=x\nrequest_disk = 1 KiB\nqueue\n",
        2,
        "not a size",
    );
    assert_line(
        "executable=x\nrequest_memory = MY.Foo * 2\nqueue\n",
        2,
        "evaluates to undefined in the job's ad",
    );
    assert_line(
        "executable=x\nrequest_cpus = two\nqueue\n",
        2,
        "evaluates to undefined",
    );
    assert_line(
        "executable=x\nrequest_cpus = 2 +\nqueue\n",
        2,
        "expected a number of cores, or a ClassAd expression",
    );
    assert_line(
        "executable=x\nrequest_memory = \"big\"\nqueue\n",
        2,
        "evaluates to \"big\"",
    );
    assert_line(
        "executable=x\npriority = ProcId * 2\nqueue\n",
        2,
        "evaluates to undefined",
    );
    assert_line("executable=x\npriority = high\nqueue\n", 2, "whole number");
    assert_line("executable=x\nhold = maybe\nqueue\n", 2, "true or false");
    assert_line(
        "executable=x\nshould_transfer_files = maybe\nqueue\n",
        2,
        "IF_NEEDED",
    );
    assert_line(
        "executable=x\nwhen_to_transfer_output = never\nqueue\n",
        2,
        "ON_EXIT",
    );
    assert_line(
        "executable=x\nuniverse = grid\nqueue\n",
        2,
        "universe 'grid'",
    );
    assert_line(
        "executable=x\nuniverse = docker\nqueue\n",
        2,
        "container_image",
    );
    assert_line(
        "executable=x\ndocker_image = a\nqueue\n",
        2,
        "'docker_image' is not supported",
    );
    assert_line(
        "executable=x\nrequest_gpus = 1\nqueue\n",
        2,
        "not supported",
    );
    assert_line("executable=x\n+Foo = 1 +\nqueue\n", 2, "incomplete");
    assert_line(
        "executable=x\n+Foo = \"abc\nqueue\n",
        2,
        "unterminated string",
    );
    assert_line(
        "executable=x\nfoo bar\nqueue\n",
        2,
        "expected 'name = value'",
    );
    assert_line(
        "executable=x\ninclude : other.sub\nqueue\n",
        2,
        "'include' is not supported",
    );
    assert_line(
        "executable=x\ninitialdir = nowhere\nqueue\n",
        2,
        "no such directory",
    );
    assert_line("arguments = 1\n\nqueue\n", 3, "no executable");
    assert_line("executable=x\nqueue abc\n", 2, "whole number");
    assert_line("executable=x\nqueue 0\n", 2, "yields no job");
    assert_line("executable=x\nqueue x in (a\n", 2, "no closing ')'");
    assert_line("executable=x\nqueue x in (\n a\n", 2, "no closing ')'");
    assert_line(
        "executable=x\nqueue x from nofile.txt\n",
        2,
        "cannot read nofile.txt",
    );
    assert_line(
        "executable=x\nqueue x matching nomatch*\n",
        2,
        "yields no job",
    );
    assert_line("executable=x\nqueue x from ls |\n", 2, "not supported");
    assert_line(
        "executable=x\narguments = a \\\n# c\n b\nqueue\n",
        3,
        "comment inside a continued line",
    );
    assert_line(
        "executable=x\nA = $(B)\nB = $(A)\narguments = $(A)\nqueue\n",
        3,
        "too deeply",
    );
    assert_line("executable=x\narguments = $INT(3)\nqueue\n", 2, "$INT()");
    assert_line(
        "executable=x\nshould_transfer_files = NO\ntransfer_input_files = a\nqueue\n",
        3,
        "should_transfer_files = NO",
    );
    assert_line(
        "executable=x\nshould_transfer_files = NO\nwhen_to_transfer_output = ON_EXIT\nqueue\n",
        3,
        "contradicts",
    );
    assert_line(
        "executable=x\nwhen_to_transfer_output = ON_EXIT_OR_EVICT\nshould_transfer_files = if_needed\nqueue\n",
        3,
        "needs should_transfer_files = YES",
    );
    assert_eq!(err("executable=x\n"), SubmitError::NoQueue);
    assert_eq!(err(""), SubmitError::NoQueue);
}

#[test]
fn allowed_job_duration_is_whole_seconds() {
    let s = parse("executable = /bin/true\nallowed_job_duration = 600\nqueue\n").unwrap();
    assert_eq!(s.jobs[0].allowed_job_duration, Some(600));
    assert!(s.jobs[0]
        .classad()
        .contains(&("AllowedJobDuration".to_string(), "600".to_string())));
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    assert_eq!(
        parse("executable = /bin/true\nqueue\n").unwrap().jobs[0].allowed_job_duration,
        None
    );
    for bad in ["10m", "0", "-5", "60 * 10"] {
        let e = parse(&format!(
            "executable = /bin/true\nallowed_job_duration = {bad}\nqueue\n"
        ))
        .unwrap_err();
        assert_eq!(e.line(), Some(2), "{bad}: {e}");
        assert!(e.to_string().contains("allowed_job_duration"), "{e}");
    }
}

#[test]
fn jobcell_limit_commands_reach_the_job_spec_and_the_ad() {
    let s = parse("executable = /bin/true\njobcell_memory_high = 1.5G\nqueue\n").unwrap();
    let job = &s.jobs[0];
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    // Rounded up to whole MiB like request_memory, kept in bytes.
    assert_eq!(job.limits.get("memory_high"), Some(&(1536 << 20)));
    assert_eq!(job.to_job_spec().resources.memory_high, Some(1536 << 20));
    assert!(job
        .classad()
        .contains(&("JobcellMemoryHigh".to_string(), (1536u64 << 20).to_string())));
    let plain = parse("executable = /bin/true\nqueue\n").unwrap();
    assert!(plain.jobs[0].limits.is_empty());
    assert_eq!(plain.jobs[0].to_job_spec().resources.memory_high, None);
    let e = parse("executable = /bin/true\njobcell_memory_high = lots\nqueue\n").unwrap_err();
    assert_eq!(e.line(), Some(2), "{e}");
    assert!(e.to_string().contains("jobcell_memory_high"), "{e}");
}

#[test]
fn container_image_names_the_image() {
    let sub =
        parse("universe = container\ncontainer_image = alma9\nexecutable = /bin/true\nqueue\n")
            .unwrap();
    assert_eq!(sub.jobs[0].image.as_deref(), Some("alma9"));
}

#[test]
fn request_expressions_are_evaluated_in_the_job_ad() {
    let s = parse(
        "executable=x\nn = 3\nrequest_cpus = ifThenElse(ProcId > 0, $(n), 1)\n\
         request_memory = RequestCpus * 1024 + 0.5\nrequest_disk = 1G\n\
         +Scratch = 10\nrequest_disk = Scratch * 1024\npriority = 7 / 2.0\nqueue 2\n",
    )
    .unwrap();
    let got: Vec<_> = s
        .jobs
        .iter()
        .map(|j| (j.request_cpus, j.request_memory, j.request_disk, j.priority))
        .collect();
    // Fractional sizes round up; priority truncates, as condor_submit's JobPrio.
    assert_eq!(
        got,
        [
            (1.0, Some(1025), Some(10240), 3),
            (3.0, Some(3073), Some(10240), 3)
        ]
    );
}

#[test]
fn a_definition_in_the_file_wins_over_a_builtin_macro() {
    let s = parse(
        "executable=x\nstep = reco\narguments = $(Step) $(Process) $(Item)\nqueue 1 in (a)\n",
    )
    .unwrap();
    assert_eq!(s.jobs[0].arguments, ["reco", "0", "a"]);
    // The queue statement's own variables still win over the file's definitions.
    let s = parse("executable=x\nitem = mine\narguments = $(item)\nqueue 1 in (a)\n").unwrap();
    assert_eq!(s.jobs[0].arguments, ["a"]);
}

#[test]
fn a_job_in_an_image_may_leave_out_the_executable() {
    let s = parse("universe = container\ncontainer_image = app\nqueue\n").unwrap();
    let j = &s.jobs[0];
    assert_eq!((j.executable.as_str(), j.argv.len()), ("", 0));
    assert_eq!(j.image.as_deref(), Some("app"));
    // Its arguments replace the image's Cmd.
    let s = parse("container_image = app\narguments = a b\nqueue\n").unwrap();
    assert_eq!(s.jobs[0].argv, ["a", "b"]);
    let mut spec = s.jobs[0].to_job_spec();
    spec.argv.clear();
    assert_eq!(spec.validate_request(), Ok(()));
    assert_eq!(spec.validate(), Err(crate::SpecError::NoCommand));
}

#[test]
fn a_cluster_past_the_limit_is_refused_before_its_jobs_are_made() {
    let max = MAX_CLUSTER_JOBS;
    let ok = parse(&format!("executable = /bin/true\nqueue {max}\n")).unwrap();
    assert_eq!(ok.jobs.len() as u64, max);
    let e = parse(&format!("executable = /bin/true\nqueue 1\nqueue {max}\n")).unwrap_err();
    assert_eq!(e, SubmitError::TooManyJobs { line: 3 });
    // Far past it: refused without making a billion jobs first.
    let e = parse("executable = /bin/true\nqueue 1000000000000\n").unwrap_err();
    assert_eq!(e.line(), Some(2));
}

#[test]
fn a_comment_after_a_queue_count_is_refused_naming_the_comment() {
    // As condor_submit: "Invalid Queue count expression".
    let e = parse("executable = /bin/true\nqueue 2 # two\n").unwrap_err();
    let msg = e.to_string();
    assert!(msg.starts_with("line 2: queue = 2 # two"), "{msg}");
    assert!(
        msg.contains("'#' comment must be on a line of its own"),
        "{msg}"
    );
}

#[test]
fn requirements_go_to_the_ad_in_normal_form_and_a_bad_one_names_its_line() {
    let s =
        parse("executable=/bin/true\nrequirements = (TARGET.Memory>=  1024) && Jobcell\nqueue\n")
            .unwrap();
    let j = &s.jobs[0];
    let text = j.requirements.as_deref().unwrap();
    assert_eq!(
        jobcell_classad::Expr::parse(text).unwrap().to_string(),
        text,
        "normal form"
    );
    assert!(j
        .classad()
        .contains(&("Requirements".to_string(), text.to_string())));
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    let e = parse("executable=/bin/true\nrequirements = Memory >\nqueue\n").unwrap_err();
    assert_eq!(e.line(), Some(2), "{e}");
    assert!(e.to_string().contains("requirements"), "{e}");
}

/// The rows of docs/submit-files.md's table of every submit command: (names, status).
fn command_table() -> Vec<(Vec<String>, String)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/submit-files.md");
    let doc = std::fs::read_to_string(path).unwrap();
    let start = doc
        .find("## Every condor_submit command")
        .expect("docs/submit-files.md has no '## Every condor_submit command' section");
    let section = &doc[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |e| e + 3)];
    let mut rows = Vec::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split(" | ").collect();
        let names = cells[0]
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect();
        rows.push((names, cells[1].trim().to_string()));
    }
    rows
}

#[test]
fn the_command_table_matches_the_parser() {
    use super::parse::{known_commands, Handling};
    let table = command_table();
    assert!(table.len() > 50, "the table has only {} rows", table.len());
    let status_of = |h: Handling| match h {
        Handling::Accepted => "accepted",
        Handling::Ignored => "ignored",
        Handling::Refused => "refused",
    };
    let in_table = |name: &str| {
        table
            .iter()
            .find(|(names, _)| names.iter().any(|n| n == name))
            .map(|(_, status)| status.as_str())
    };
    let known = known_commands();
    // Every command the parser knows is in the table, with what the parser does with it.
    for (name, handling) in &known {
        assert_eq!(
            in_table(name),
            Some(status_of(*handling)),
            "docs/submit-files.md: '{name}' should be listed as {}",
            status_of(*handling)
        );
    }
    // Every command in the table is one the parser knows, and it does what the table says.
    for (names, status) in &table {
        assert!(
            ["accepted", "ignored", "refused"].contains(&status.as_str()),
            "docs/submit-files.md: {names:?} has status '{status}'"
        );
        for name in names {
            if name == "queue" {
                assert_eq!(status, "accepted");
                continue;
            }
            assert!(
                known
                    .iter()
                    .any(|(k, h)| k == name && status_of(*h) == status),
                "docs/submit-files.md lists '{name}' as {status}; the parser does not know it so"
            );
            let command = name.replace("<name>", "foo");
            let result = parse(&format!("executable = x\n{command} = 1\nqueue\n"));
            match status.as_str() {
                "ignored" => {
                    let s = result.unwrap_or_else(|e| panic!("'{command}': {e}"));
                    let said = format!("'{command}' has no effect on a single jobcell node");
                    assert!(
                        s.warnings
                            .iter()
                            .any(|w| w.line == 2 && w.msg.contains(&said)),
                        "'{command}': {:?}",
                        s.warnings
                    );
                }
                "refused" => match result {
                    Err(SubmitError::Unsupported { line: 2, what, .. }) => {
                        assert_eq!(what, format!("'{command}'"))
                    }
                    other => panic!("'{command}' should be refused: {other:?}"),
                },
                _ => {
                    if let Ok(s) = result {
                        assert!(
                            !s.warnings.iter().any(|w| w.line == 2),
                            "'{command}': {:?}",
                            s.warnings
                        );
                    }
                }
            }
        }
    }
}
