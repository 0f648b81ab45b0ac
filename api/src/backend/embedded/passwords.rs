//! argon2id password hashes (PHC strings with their own salt and parameters), computed on a
//! fixed set of threads.
//!
//! Each argon2id hash works in 19 MiB of memory. Run on tokio's blocking pool, a burst of
//! logins could hash on hundreds of threads at once, and the allocator keeps each thread's
//! 19 MiB afterwards. A few dedicated threads bound both: at most `threads` hashes run at a time
//! (others wait their turn), and each hash allocates its working memory for itself and frees
//! it after, so an idle server holds none of it (at most `threads` buffers exist at once).

use std::sync::{Arc, Mutex, OnceLock};

use argon2::password_hash::{
    self, rand_core::OsRng, Output, ParamsString, PasswordHash, Salt, SaltString,
};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::{mpsc, oneshot};

use crate::backend::{BackendError, BackendResult};

type Job = Box<dyn FnOnce() + Send>;

/// Hashes waiting for a thread; beyond, a login or sign-up is told the server is busy. Each
/// client address has at most `--max-concurrent-logins-per-client` of them.
const QUEUE: usize = 128;

pub struct Passwords {
    jobs: mpsc::Sender<Job>,
}

impl Passwords {
    /// Starts `threads` hashing threads (at least one).
    pub fn spawn(threads: usize) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>(QUEUE);
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..threads.max(1) {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("mmsub-argon2-{i}"))
                .spawn(move || loop {
                    let next = queue
                        .lock()
                        .expect("password queue poisoned")
                        .blocking_recv();
                    match next {
                        Some(job) => job(),
                        None => return,
                    }
                })?;
        }
        Ok(Self { jobs })
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> BackendResult<T> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(work());
        });
        let stopped = || BackendError::Unavailable("Password hashing has stopped.".into());
        // A full queue answers at once: waiting callers would be an unbounded queue of their own.
        self.jobs.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => BackendError::Unavailable(
                "The server is busy checking passwords; retry in a moment.".into(),
            ),
            mpsc::error::TrySendError::Closed(_) => stopped(),
        })?;
        rx.await.map_err(|_| stopped())
    }

    pub async fn hash(&self, password: String) -> BackendResult<String> {
        self.run(move || hash(&password)).await
    }

    /// Checks `password` against a stored hash. Without one (unknown user) it spends the same
    /// work on a dummy hash, so timing does not reveal which usernames exist.
    pub async fn verify(&self, password: String, phc: Option<String>) -> BackendResult<bool> {
        self.run(move || match phc {
            Some(phc) => verify(&password, &phc),
            None => {
                static DUMMY: OnceLock<String> = OnceLock::new();
                verify(
                    &password,
                    DUMMY.get_or_init(|| hash("dummy password for timing")),
                );
                false
            }
        })
        .await
    }
}

fn compute(
    argon2: &Argon2,
    password: &[u8],
    salt: Salt,
    output_len: usize,
) -> password_hash::Result<Output> {
    let mut salt_buf = [0u8; 64];
    let salt = salt.decode_b64(&mut salt_buf)?;
    // The working memory (19 MiB by default) lives for one hash: large enough that the
    // allocator maps and unmaps it, so an idle server gives it back instead of keeping one
    // copy per pool thread. The pool's size still bounds how many exist at once.
    let mut blocks = vec![Block::default(); argon2.params().block_count()];
    Output::init_with(output_len, |out| {
        Ok(argon2.hash_password_into_with_memory(password, salt, out, &mut blocks[..])?)
    })
}

/// The same PHC string `argon2::PasswordHasher` writes, computed in this thread's memory.
fn hash(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    let argon2 = Argon2::default();
    let phc = compute(
        &argon2,
        password.as_bytes(),
        salt.as_salt(),
        Params::DEFAULT_OUTPUT_LEN,
    )
    .and_then(|output| {
        Ok(PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(argon2.params())?,
            salt: Some(salt.as_salt()),
            hash: Some(output),
        }
        .to_string())
    });
    phc.expect("argon2id with default parameters cannot fail")
}

/// Recomputes with the parameters stored in `phc` and compares in constant time.
fn verify(password: &str, phc: &str) -> bool {
    let check = || -> password_hash::Result<bool> {
        let parsed = PasswordHash::new(phc)?;
        let expected = parsed.hash.ok_or(password_hash::Error::Password)?;
        let salt = parsed.salt.ok_or(password_hash::Error::Password)?;
        let version = parsed
            .version
            .map(Version::try_from)
            .transpose()?
            .unwrap_or_default();
        let argon2 = Argon2::new(
            Algorithm::try_from(parsed.algorithm)?,
            version,
            Params::try_from(&parsed)?,
        );
        Ok(compute(&argon2, password.as_bytes(), salt, expected.len())? == expected)
    };
    check().unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::{PasswordHasher, PasswordVerifier};

    #[test]
    fn hashes_are_standard_phc_strings_both_ways() {
        let ours = hash("Str0ng!Pass");
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(Argon2::default()
            .verify_password(b"Str0ng!Pass", &parsed)
            .is_ok());
        assert!(Argon2::default()
            .verify_password(b"wrong", &parsed)
            .is_err());
        let standard = Argon2::default()
            .hash_password(b"Str0ng!Pass", &SaltString::generate(&mut OsRng))
            .unwrap()
            .to_string();
        assert!(verify("Str0ng!Pass", &standard));
        assert!(!verify("wrong", &standard));
        assert!(!verify("Str0ng!Pass", "not a phc string"));
    }

    #[tokio::test]
    async fn hashes_verify_and_many_callers_share_few_threads() {
        let passwords = Arc::new(Passwords::spawn(2).unwrap());
        let phc = passwords.hash("Str0ng!Pass".into()).await.unwrap();
        assert!(phc.starts_with("$argon2id$"));
        let checks = (0..6).map(|i| {
            let (passwords, phc) = (passwords.clone(), phc.clone());
            tokio::spawn(async move {
                let password = if i % 2 == 0 { "Str0ng!Pass" } else { "wrong" };
                passwords.verify(password.into(), Some(phc)).await.unwrap()
            })
        });
        let results: Vec<bool> = futures::future::join_all(checks)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(results, [true, false, true, false, true, false]);
        assert!(!passwords.verify("x".into(), None).await.unwrap());
    }
}
