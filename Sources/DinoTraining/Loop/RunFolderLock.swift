import DinoKernels
import Foundation

/// One writer per run folder. A second `dino train` or `dino quickstart` on the same `--output` (a
/// `--resume` typed while the first still runs, a job started twice) would interleave its log lines with
/// the first's, overwrite its checkpoints, and at its start delete the first's half-written temporary
/// files. The hold is an advisory `flock` on `RUN/.lock`, which the kernel releases when the process
/// ends in any way, SIGKILL included, so a killed run resumes without clearing anything by hand.
enum RunFolderLock {
    /// The name of the lock file inside a run folder (hidden; it stays after the run, empty of meaning).
    static let fileName = ".lock"

    /// Lock files this process holds, by path: a run restarted in-process (collapse recovery builds a new
    /// `Trainer` on the same folder) keeps its hold instead of locking itself out.
    nonisolated(unsafe) private static var held: [String: Int32] = [:]
    private static let registry = NSLock()

    /// Takes the folder for this process, or throws naming the process that holds it.
    static func acquire(_ folder: URL) throws {
        let path = folder.appendingPathComponent(fileName).path
        registry.lock(); defer { registry.unlock() }
        if held[path] != nil { return }
        let descriptor = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else {
            throw DinoError("cannot open \(path): \(String(cString: strerror(errno))); choose another --output")
        }
        guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else {
            let holder = (try? String(contentsOfFile: path, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
            close(descriptor)
            let who = Int(holder).map { "process \($0)" } ?? "another process"
            throw DinoError("\(folder.path) is in use by another dino run (\(who)): wait for it to end or stop it, or choose another --output")
        }
        // The holder's process id, for the message above; the lock itself is the flock, not this text.
        let text = Array("\(getpid())\n".utf8)
        if ftruncate(descriptor, 0) == 0 { _ = text.withUnsafeBytes { pwrite(descriptor, $0.baseAddress, $0.count, 0) } }
        held[path] = descriptor
    }
}
