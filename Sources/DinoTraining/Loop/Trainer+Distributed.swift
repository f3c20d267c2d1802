import DinoKernels
import Foundation

/// Data-parallel training, as the official DINO runs torch DDP: every process holds the whole model and
/// takes its consecutive share of each global batch (`MultiCropLoader`'s ranks, so the crops do not
/// depend on the number of processes); the step averages the gradients over the processes before
/// clipping, and takes the center's batch mean, Sinkhorn-Knopp's sums and the logged statistics over
/// all of them (`SelfDistillation.communicator`), so every process takes the same AdamW step and
/// teacher EMA. Rank 0 writes the files and evaluates; the time box runs on rank 0's clock, and a stop
/// request on any process stops all of them at the same step.
extension Trainer {
    /// Steps between checks that the processes' models are still identical.
    static let agreementInterval = 200

    /// Refuses what data parallelism does not support, before anything is built.
    static func checkDataParallel(recipe: Recipe, processes: Int) throws {
        guard processes > 1 else { return }
        guard recipe.batch_size % processes == 0 else {
            throw DinoError("batch_size \(recipe.batch_size) must be a multiple of the \(processes) processes (each takes an equal share of the global batch): set batch_size to \(max(1, recipe.batch_size / processes) * processes)")
        }
    }

    /// Rank 0's `clock()` on every process (one collective: every process calls it at the same points).
    func sharedClock() -> Double {
        guard communicator.size > 1 else { return clock() }
        return communicator.sum(communicator.isPrimary ? clock() : 0)
    }

    /// One collective per step: rank 0's clock, whether any process was asked to stop, and the images
    /// skipped by all processes in this step.
    func synchronizeStep(stopRequested: Bool, skipped: Int) -> (clock: Double, stop: Bool, skipped: Int) {
        guard communicator.size > 1 else { return (clock(), stopRequested, skipped) }
        var values = [communicator.isPrimary ? clock() : 0, stopRequested ? 1 : 0, Double(skipped)]
        communicator.sum(&values, count: 3)
        return (values[0], values[1] > 0, Int(values[2]))
    }

    /// Every `agreementInterval` steps, compares the processes' teacher and student checksums; processes
    /// that took the same steps agree bit for bit, so any difference is a fault (a process that read other
    /// data, memory corruption), and the run stops before it writes a checkpoint of a model that differs.
    func checkProcessesAgree(step: Int) throws {
        guard communicator.size > 1, step % Trainer.agreementInterval == 0 else { return }
        let (teacher, student) = model.parameterChecksum()
        var values = [teacher, student, -teacher, -student]
        communicator.maximum(&values, count: 4)
        guard values[0] == -values[2], values[1] == -values[3] else {
            throw DinoError(String(format: "the %d processes' models differ at step %d (teacher checksums %.9g to %.9g): stopped before writing a checkpoint; continue from the last one with --resume", communicator.size, step, -values[2], values[0]))
        }
    }
}
