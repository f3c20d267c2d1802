import DinoModel
import Foundation
import XCTest

/// `mpirun -np 2 dino train` against one process with the same global batch (Open MPI from Debian:
/// `openmpi-bin`; the tests skip, saying so, where `mpirun` is not installed): the same losses, center
/// and teacher; checkpoints resume on another number of processes; a killed process ends the job with an
/// intact checkpoint; and the same run across two network namespaces joined by a veth pair, over TCP.
final class DistributedTrainingTests: XCTestCase {
    static let mpirun = ["/usr/bin/mpirun", "/usr/local/bin/mpirun"].first { FileManager.default.isExecutableFile(atPath: $0) }
    static let recipe = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Recipes/fashion-mnist-quick.yaml").path
    /// 20 steps of batch 64 per epoch on 1,280 Fashion-MNIST images, no drop path, no KoLeo (KoLeo is per
    /// process, as DINOv2's), no evaluation, float32 matmuls (the 1e-4 below is float32's: in bfloat16 a
    /// last-bit difference in a weight that crosses a rounding boundary becomes a 2⁻⁸ step).
    static let settings = ["--recipe", recipe, "--set", "matmul_precision=float32", "--set", "train_subset=1280", "--set", "epochs=2", "--set", "koleo_loss_weight=0",
                           "--set", "batch_size=64", "--set", "max_minutes=0", "--set", "warmup_epochs=1",
                           "--set", "knn_every=0", "--set", "seed=3", "--set", "checkpoint_every=5"]

    func launcher(_ processes: Int, extra: [String] = []) throws -> [String] {
        guard let mpirun = Self.mpirun else { throw XCTSkip("mpirun is not installed (apt install openmpi-bin): data-parallel tests skipped") }
        return [mpirun, "--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "-np", "\(processes)"] + extra
    }

    /// The per-step losses of a run's log.
    func losses(_ run: URL) -> [Double] {
        let text = (try? String(contentsOf: run.appendingPathComponent("log.jsonl"), encoding: .utf8)) ?? ""
        return text.split(separator: "\n").compactMap {
            (try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])?["loss"] as? Double
        }
    }

    func assertClose(_ a: [Double], _ b: [Double], _ label: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.count, b.count, "\(label): lengths", file: file, line: line)
        let scale = max(b.map(abs).max() ?? 1, 1e-12)
        let worst = zip(a, b).map { abs($0 - $1) }.max() ?? .infinity
        XCTAssertLessThanOrEqual(worst / scale, 1e-4, "\(label): largest difference \(worst) (scale \(scale))", file: file, line: line)
    }

    /// The center and the teacher of a run's checkpoint.
    func state(_ run: URL) throws -> (center: [Double], teacher: [Double]) {
        let file = try SafeTensors.read(run.appendingPathComponent("checkpoint.safetensors"))
        let teacher = file.tensors.filter { $0.name.hasPrefix("teacher.") }.flatMap(\.values).map(Double.init)
        return (file.tensor("dino_loss.center").map { $0.values.map(Double.init) } ?? [], teacher)
    }

    func train(_ output: URL, processes: Int, _ extra: [String] = [], launcherExtra: [String] = []) throws -> ProcessResult {
        let arguments = ["train", "--output", output.path, "--threads", processes == 1 ? "2" : "1"] + Self.settings + extra
        return processes == 1 ? runDino(arguments, timeout: 600)
            : runDino(arguments, timeout: 600, launcher: try launcher(processes, extra: launcherExtra))
    }

    /// Commands other than train run once under mpirun, in rank 0, saying so: not once per process.
    func testOtherCommandsRunOnceUnderMPI() throws {
        let result = runDino(["knn", "--raw-pixels", "--train", "fashion-mnist:train", "--validation", "--limit", "500"],
                             timeout: 120, launcher: try launcher(2))
        assertSucceeded(result)
        XCTAssertEqual(result.stdout.components(separatedBy: "weighted k-NN").count, 2, result.stdout)
        XCTAssertEqual(result.stderrLines.filter { $0.hasPrefix("note:") },
                       ["note: only dino train divides its work among MPI processes; dino knn runs once, in rank 0 of the 2"], result.stderr)
    }

    func testTwoProcessesTrainLikeOne() throws {
        let folder = makeTemporaryFolder()
        let one = folder.appendingPathComponent("one"), two = folder.appendingPathComponent("two")
        assertSucceeded(try train(one, processes: 1, ["--set", "max_steps=20"]))
        let run = try train(two, processes: 2, ["--set", "max_steps=20"])
        assertSucceeded(run)
        XCTAssertTrue(run.stdout.contains("batch 64 (2 processes of 32)"), run.stdout)
        XCTAssertEqual(run.stdout.components(separatedBy: "finished 20 steps").count, 2, "one report, from rank 0: \(run.stdout)")
        assertClose(losses(two), losses(one), "the first 20 losses")
        let (a, b) = (try state(one), try state(two))
        assertClose(b.center, a.center, "the center")
        assertClose(b.teacher, a.teacher, "the teacher")
        // Sinkhorn-Knopp targets take their sums over both processes: the same losses as one process.
        let sk1 = folder.appendingPathComponent("sk1"), sk2 = folder.appendingPathComponent("sk2")
        let sinkhorn = ["--set", "centering=sinkhorn_knopp", "--set", "max_steps=10"]
        assertSucceeded(try train(sk1, processes: 1, sinkhorn))
        assertSucceeded(try train(sk2, processes: 2, sinkhorn))
        assertClose(losses(sk2), losses(sk1), "Sinkhorn-Knopp losses")
        // The masked-patch term: the masks of the global batch as one process draws them, the patch center's
        // mean over every process's masked patches.
        let ibot1 = folder.appendingPathComponent("ibot1"), ibot2 = folder.appendingPathComponent("ibot2")
        let ibot = ["--set", "ibot_loss_weight=1", "--set", "max_steps=10"]
        assertSucceeded(try train(ibot1, processes: 1, ibot))
        assertSucceeded(try train(ibot2, processes: 2, ibot))
        assertClose(losses(ibot2), losses(ibot1), "losses with the masked-patch term")
        assertClose(try state(ibot2).teacher, try state(ibot1).teacher, "the teacher with the masked-patch term")
        // A global batch that does not split evenly is refused with the fix: one error line from rank 0 (rank 1's,
        // when mpirun lets it print, says it is rank 1's), then mpirun's note that the job ended.
        let odd = try train(folder.appendingPathComponent("odd"), processes: 2, ["--set", "batch_size=63"])
        XCTAssertNotEqual(odd.status, 0)
        XCTAssertEqual(odd.stderrLines.filter { $0.hasPrefix("error: ") }, ["error: batch_size 63 must be a multiple of the 2 processes (each takes an equal share of the global batch): set batch_size to 62"])
        XCTAssertFalse(FileManager.default.fileExists(atPath: folder.appendingPathComponent("odd/checkpoint.safetensors").path))
    }

    /// A checkpoint written by 2 processes continues on 1, and one written by 1 continues on 2, with the
    /// losses of the uninterrupted run.
    func testCheckpointsResumeOnAnotherNumberOfProcesses() throws {
        let folder = makeTemporaryFolder()
        let whole = folder.appendingPathComponent("whole")
        assertSucceeded(try train(whole, processes: 1, ["--set", "max_steps=20"]))
        for (first, second) in [(2, 1), (1, 2)] {
            let run = folder.appendingPathComponent("\(first)-then-\(second)")
            assertSucceeded(try train(run, processes: first, ["--set", "max_steps=10"]))
            assertSucceeded(try train(run, processes: second, ["--set", "max_steps=20", "--resume"]))
            assertClose(losses(run), losses(whole), "\(first) then \(second) processes")
        }
    }

    /// The pid of rank `rank` of the job writing `run`.
    func pid(ofRank rank: Int, writing run: URL) throws -> Int32? {
        (try FileManager.default.contentsOfDirectory(atPath: "/proc")).compactMap(Int32.init).first { pid in
            guard let environment = FileManager.default.contents(atPath: "/proc/\(pid)/environ"),
                  let command = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return false }
            return String(decoding: command, as: UTF8.self).contains(run.path)
                && environment.split(separator: 0).contains { String(decoding: $0, as: UTF8.self) == "OMPI_COMM_WORLD_RANK=\(rank)" }
        }
    }

    /// SIGINT to one process (not rank 0) stops every process at the same step, with a checkpoint.
    func testAnInterruptedProcessStopsEveryProcessWithACheckpoint() throws {
        let run = makeTemporaryFolder().appendingPathComponent("run")
        let job = startDino(["train", "--output", run.path, "--threads", "1"] + Self.settings + ["--set", "train_subset=6400"],
                            launcher: try launcher(2))
        let deadline = Date().addingTimeInterval(120)
        while losses(run).count < 5 && Date() < deadline && job.process.isRunning { usleep(100_000) }
        kill(try XCTUnwrap(try pid(ofRank: 1, writing: run), "rank 1 was not found"), SIGINT)
        let result = job.finish()
        assertSucceeded(result)
        let steps = losses(run).count
        XCTAssertTrue(result.stdout.contains("stopped at step \(steps); checkpoint saved"), result.stdout)
        XCTAssertLessThan(steps, 200)
        XCTAssertNoThrow(try BackboneCheckpoint.load(from: run.appendingPathComponent("checkpoint.safetensors")))
    }

    /// SIGKILL one of two processes mid-run: mpirun ends the job and names the rank, the last checkpoint
    /// reads, and --resume finishes the run.
    func testAKilledProcessEndsTheJobAndTheRunResumes() throws {
        let run = makeTemporaryFolder().appendingPathComponent("run")
        let arguments = ["train", "--output", run.path, "--threads", "1"] + Self.settings + ["--set", "train_subset=6400"]
        let job = startDino(arguments, launcher: try launcher(2))
        // Wait for a few logged steps, then kill rank 1.
        let deadline = Date().addingTimeInterval(120)
        while losses(run).count < 8 && Date() < deadline && job.process.isRunning { usleep(100_000) }
        let killed = try XCTUnwrap(try pid(ofRank: 1, writing: run), "rank 1 was not found")
        kill(killed, SIGKILL)
        let stopped = Date().addingTimeInterval(60)
        while job.process.isRunning && Date() < stopped { usleep(100_000) }
        XCTAssertFalse(job.process.isRunning, "the job did not end within 60 s of losing a rank")
        if job.process.isRunning { kill(job.process.processIdentifier, SIGKILL) }
        let result = job.finish()
        XCTAssertNotEqual(result.status, 0)
        XCTAssertTrue((result.stdout + result.stderr).contains("rank 1"), "mpirun's message names the rank: \(result.stderr)")
        XCTAssertNoThrow(try BackboneCheckpoint.load(from: run.appendingPathComponent("checkpoint.safetensors")))
        let resumed = runDino(arguments + ["--resume", "--set", "max_steps=20"], timeout: 600, launcher: try launcher(2))
        assertSucceeded(resumed)
        XCTAssertEqual(losses(run).count, 20)
    }

    /// Two "machines": network namespaces joined by a veth pair with addresses of their own, one rank in
    /// each, Open MPI over TCP between them (mpirun starts the remote rank through `ip netns exec` in place of
    /// ssh). Needs root; without it this test says so and skips.
    func testAcrossTwoNetworkNamespaces() throws {
        _ = try launcher(2)
        let tag = String(ProcessInfo.processInfo.processIdentifier % 100_000)
        let (a, b) = ("dino\(tag)a", "dino\(tag)b"), (va, vb) = ("dv\(tag)a", "dv\(tag)b")
        func ip(_ arguments: String) -> Bool {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/bin/sh")
            p.arguments = ["-c", "ip \(arguments)"]
            p.standardError = FileHandle.nullDevice
            guard (try? p.run()) != nil else { return false }
            p.waitUntilExit()
            return p.terminationStatus == 0
        }
        guard getuid() == 0, ip("netns add \(a)") else { throw XCTSkip("network namespaces cannot be created here (needs root and iproute2): the two-machine test skipped") }
        defer { _ = ip("netns del \(a)"); _ = ip("netns del \(b)") }
        for command in ["netns add \(b)", "link add \(va) type veth peer name \(vb)", "link set \(va) netns \(a)", "link set \(vb) netns \(b)",
                        "netns exec \(a) ip addr add 10.231.77.1/24 dev \(va)", "netns exec \(b) ip addr add 10.231.77.2/24 dev \(vb)",
                        "netns exec \(a) ip link set \(va) up", "netns exec \(b) ip link set \(vb) up",
                        "netns exec \(a) ip link set lo up", "netns exec \(b) ip link set lo up"] {
            XCTAssertTrue(ip(command), "ip \(command)")
        }
        let folder = makeTemporaryFolder()
        let agent = folder.appendingPathComponent("netns-agent.sh"), marker = folder.appendingPathComponent("launched")
        try """
        #!/bin/sh
        host=$1; shift
        case $host in 10.231.77.1) ns=\(a);; 10.231.77.2) ns=\(b);; *) echo "unknown host $host" >&2; exit 1;; esac
        echo "$ns" >> \(marker.path)
        exec ip netns exec $ns sh -c "$*"
        """.write(to: agent, atomically: true, encoding: .utf8)
        XCTAssertEqual(chmod(agent.path, 0o755), 0)
        let one = folder.appendingPathComponent("one"), two = folder.appendingPathComponent("two")
        assertSucceeded(try train(one, processes: 1, ["--set", "max_steps=20"]))
        let network = ["--host", "10.231.77.1,10.231.77.2", "--mca", "plm_rsh_agent", agent.path, "--mca", "btl", "tcp,self",
                       "--mca", "btl_tcp_if_include", "10.231.77.0/24", "--mca", "oob_tcp_if_include", "10.231.77.0/24"]
        let arguments = ["train", "--output", two.path, "--threads", "1"] + Self.settings + ["--set", "max_steps=20"]
        let run = runDino(arguments, timeout: 600, launcher: ["/usr/sbin/ip", "netns", "exec", a] + (try launcher(2, extra: network)))
        assertSucceeded(run)
        XCTAssertEqual((try? String(contentsOf: marker, encoding: .utf8))?.contains(b), true, "rank 1 ran in the second namespace")
        assertClose(losses(two), losses(one), "losses across the namespaces")
    }
}
