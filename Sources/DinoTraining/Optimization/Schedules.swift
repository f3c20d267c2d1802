import Foundation

/// The official schedules (utils.py `cosine_scheduler`, DINOLoss `teacher_temp_schedule`).
public enum Schedules {
    /// One value per iteration: a linear warm-up `linspace(start, base, warmupIterations)` (inclusive,
    /// so `base` appears at both its end and the cosine's start), then
    /// `final + ½(base − final)(1 + cos(π·i/n))` for i in 0..<n, n = total − warm-up iterations.
    public static func cosine(base: Double, final: Double, epochs: Int, iterationsPerEpoch: Int,
                              warmupEpochs: Int = 0, startWarmupValue: Double = 0) -> [Double] {
        cosine(base: base, final: final, iterations: epochs * iterationsPerEpoch,
               warmupIterations: warmupEpochs * iterationsPerEpoch, startWarmupValue: startWarmupValue)
    }

    /// The same over `iterations` steps in all, which need not be whole epochs (a time-boxed run).
    public static func cosine(base: Double, final: Double, iterations: Int, warmupIterations: Int,
                              startWarmupValue: Double = 0) -> [Double] {
        var schedule = linspace(startWarmupValue, base, count: warmupIterations)
        let n = iterations - warmupIterations
        for i in 0..<max(n, 0) {
            schedule.append(final + 0.5 * (base - final) * (1 + cos(Double.pi * Double(i) / Double(n))))
        }
        return schedule
    }

    /// Per epoch: `linspace(warmup, temp, warmupEpochs)` then `temp` for the remaining epochs.
    public static func teacherTemperature(warmup: Double, final: Double, warmupEpochs: Int, epochs: Int) -> [Double] {
        linspace(warmup, final, count: warmupEpochs) + Array(repeating: final, count: max(0, epochs - warmupEpochs))
    }

    /// numpy.linspace: `count` values from start to stop inclusive.
    public static func linspace(_ start: Double, _ stop: Double, count: Int) -> [Double] {
        if count <= 0 { return [] }
        if count == 1 { return [start] }
        let step = (stop - start) / Double(count - 1)
        return (0..<count).map { $0 == count - 1 ? stop : start + Double($0) * step }
    }
}
