import ArgumentParser
import CDinoKernels
import COpenBLAS
import DinoDistributed
import DinoKernels
import DinoModel
import DinoTraining
import Foundation

/// A benchmark configuration; the same names and shapes as Benchmarks/pytorch_bench.py.
struct BenchConfig {
    let name: String
    let vit: ViTConfig
    let globalSize: Int, localSize: Int, localCount: Int
    let batch: Int
    let outDim: Int
    let training: Bool
    var headHidden = 2048, headBottleneck = 256
    /// The student's stochastic depth in the timed step (the recipes' Fashion-MNIST model trains without).
    var dropPathRate = 0.1

    static let all: [BenchConfig] = [
        BenchConfig(name: "fmnist-tiny", vit: vit("vit_tiny", 28, 4, 1), globalSize: 28, localSize: 12, localCount: 6, batch: 64, outDim: 4096, training: true),
        BenchConfig(name: "cifar-tiny", vit: vit("vit_tiny", 32, 4, 3), globalSize: 32, localSize: 16, localCount: 6, batch: 64, outDim: 4096, training: true),
        BenchConfig(name: "in-small16", vit: vit("vit_small", 224, 16, 3), globalSize: 224, localSize: 96, localCount: 10, batch: 8, outDim: 65536, training: true),
        BenchConfig(name: "features-small16", vit: vit("vit_small", 224, 16, 3), globalSize: 224, localSize: 0, localCount: 0, batch: 64, outDim: 0, training: false),
        BenchConfig(name: "features-tiny4", vit: vit("vit_tiny", 28, 4, 1), globalSize: 28, localSize: 0, localCount: 0, batch: 256, outDim: 0, training: false),
        // DINOv2's ViT-S/14 with 4 registers (dinov2_vits14_reg4): LayerScale, 518 px position embedding
        // interpolated (antialiased) to 224 px.
        BenchConfig(name: "features-small14-reg4",
                    vit: ViTConfig(arch: "custom", imageSize: 518, patchSize: 14, inChannels: 3, embedDim: 384, depth: 12, numHeads: 6,
                                   registerCount: 4, layerScaleInit: 1e-5, interpolateOffset: 0, interpolateAntialias: true),
                    globalSize: 224, localSize: 0, localCount: 0, batch: 64, outDim: 0, training: false),
        // Recipes/fashion-mnist.yaml's model and crops (without its KoLeo term): what users of the 30-minute recipe run.
        BenchConfig(name: "fmnist-recipe",
                    vit: ViTConfig(arch: "custom", imageSize: 21, patchSize: 7, inChannels: 1, embedDim: 96, depth: 6, numHeads: 3),
                    globalSize: 21, localSize: 14, localCount: 6, batch: 64, outDim: 1024, training: true,
                    headHidden: 512, headBottleneck: 128, dropPathRate: 0),
    ]

    static func vit(_ arch: String, _ size: Int, _ patch: Int, _ channels: Int) -> ViTConfig {
        try! ViTConfig.named(arch, imageSize: size, patchSize: patch, inChannels: channels)
    }

    var head: HeadConfig { HeadConfig(inDim: vit.embedDim, outDim: max(outDim, 2), hiddenDim: headHidden, bottleneckDim: headBottleneck) }

    /// Forward FLOPs (multiply-adds × 2) of the backbone for one image at `size`: the official model's
    /// work, or with `executed` what this project computes: the last block for the class token alone
    /// (keys and values over every token; query, attention row, projection and MLP on one row), and each
    /// branch of block l on the images that keep it, a share 1 − rate·l/(depth−1) on average (the
    /// student's drop-path skip path).
    func backboneFlops(size: Int, executed: Bool = false, dropPathRate: Double = 0) -> Double {
        let d = Double(vit.embedDim), h = Double(vit.hiddenDim)
        let n = Double((size / vit.patchSize) * (size / vit.patchSize) + vit.firstPatchToken)
        var total = 2 * (n - Double(vit.firstPatchToken)) * d * Double(vit.inChannels * vit.patchSize * vit.patchSize)
        for l in 0..<vit.depth {
            let keep = executed && vit.depth > 1 ? 1 - dropPathRate * Double(l) / Double(vit.depth - 1) : 1
            let queries = executed && l == vit.depth - 1 ? 1 : n
            let attention = 2 * n * 2 * d * d + 2 * queries * d * d + 2 * 2 * queries * n * d + 2 * queries * d * d
            total += keep * (attention + 2 * queries * 2 * d * h)
        }
        return total
    }

    /// Forward FLOPs of the head for one row.
    var headFlops: Double {
        let h = head
        return 2 * Double(h.inDim * h.hiddenDim + h.hiddenDim * h.hiddenDim + h.hiddenDim * h.bottleneckDim + h.bottleneckDim * h.outDim)
    }

    /// FLOPs per step (training: student forward + backward ≈ 3× forward on all crops, teacher forward
    /// on the global crops) or per batch of features. The official model's work is the same count as
    /// Benchmarks/pytorch_bench.py, so GFLOP/s compare like images/s do; with `executed`, what this
    /// project computes (`backboneFlops(executed:)`; the head in full), what the cores are busy with.
    func flopsPerStep(executed: Bool = false) -> Double {
        let b = Double(batch)
        func backbone(_ size: Int, _ rate: Double) -> Double { backboneFlops(size: size, executed: executed, dropPathRate: rate) }
        if !training { return b * backbone(globalSize, 0) }
        let student = 2 * (backbone(globalSize, dropPathRate) + headFlops) + Double(localCount) * (backbone(localSize, dropPathRate) + headFlops)
        let teacher = 2 * (backbone(globalSize, 0) + headFlops)
        return b * (3 * student + teacher)
    }
}

func peakResidentMiB() -> Double {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
          let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
          let kb = Double(line.split(separator: " ").dropFirst().first ?? "") else { return 0 }
    return kb / 1024
}

/// One timed unit of a configuration on random inputs: a whole training step (`SelfDistillation`), or a
/// CLS feature pass as `dino features` runs it. `classTokenOnly: false` computes every token in the last block.
/// Under mpirun a training step is data parallel: each process takes its share of the global batch.
func makeTimedStep(_ c: BenchConfig, classTokenOnly: Bool, communicator: any Communicator = SingleProcess()) -> () throws -> Void {
    var g = RandomGenerator(seed: 1)
    func random(_ count: Int) -> FloatBuffer {
        let x = FloatBuffer(count: max(1, count))
        for i in 0..<count { x[i] = Float(g.nextNormal()) }
        return x
    }
    let channels = c.vit.inChannels
    if c.training {
        let b = c.batch / communicator.size
        let model = SelfDistillation(config: c.vit, head: c.head, batchSize: b, globalSize: c.globalSize,
                                     localSize: c.localSize, localCount: c.localCount, classTokenOnly: classTokenOnly)
        model.initialize(seed: 0)
        model.communicator = communicator
        let globals = random(2 * b * channels * c.globalSize * c.globalSize)
        let locals = random(c.localCount * b * channels * c.localSize * c.localSize)
        let settings = StepSettings(learningRate: 1e-4, weightDecay: 0.04, teacherMomentum: 0.996, teacherTemperature: 0.04,
                                    freezeLastLayer: false, clip: 3, dropPathRate: c.dropPathRate)
        var dropPath = RandomGenerator(seed: 3)
        return { _ = try model.step(globals: globals.pointer, locals: locals.pointer, settings: settings, dropPath: &dropPath) }
    }
    let backbone = BackboneCheckpoint.initialized(config: c.vit, mean: [0.5], std: [0.5], seed: 0)
    // Two half-batch shards, as `FeatureExtractor` runs CLS features.
    let shards = backbone.transformer.makeShardActivations(batch: c.batch, shards: 2, imageHeight: c.globalSize,
                                                           imageWidth: c.globalSize, training: false, classTokenOnly: classTokenOnly)
    let images = random(c.batch * channels * c.globalSize * c.globalSize)
    return { backbone.transformer.forward(parameters: backbone.parameters.pointer, images: images.pointer, shards: shards) }
}

func median(_ x: [Double]) -> Double { let s = x.sorted(); return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2 }

/// The machine's sgemm peak on `threads` threads: the best of 5 products of 2048³ through OpenBLAS
/// with its own threading (the kernels' tiled GEMM keeps OpenBLAS single-threaded otherwise).
/// The best rather than the median: on a shared virtual machine the peak is what the hardware can
/// do when nothing else runs.
func sgemmPeak(threads: Int) -> Double {
    let n = 2048
    let a = FloatBuffer(count: n * n), b = FloatBuffer(count: n * n), c = FloatBuffer(count: n * n)
    for i in 0..<(n * n) { a[i] = Float(i % 7) * 0.1; b[i] = Float(i % 5) * 0.1 }
    openblas_set_num_threads(Int32(threads))
    defer { openblas_set_num_threads(1) }
    var best = Double.infinity
    for _ in 0..<5 {
        let t = Date()
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(n), Int32(n), Int32(n), 1, a.pointer, Int32(n),
                    b.pointer, Int32(n), 0, c.pointer, Int32(n))
        best = min(best, Date().timeIntervalSince(t))
    }
    withExtendedLifetime((a, b, c)) {}
    return 2 * pow(Double(n), 3) / best / 1e9
}

/// User + system CPU seconds of this process so far (all its threads).
func processCPUSeconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    func seconds(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
    return seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dino-bench",
        abstract: "Time a DINO training step or feature extraction (same configurations as Benchmarks/pytorch_bench.py).")

    @Option(help: "fmnist-tiny, cifar-tiny, in-small16, features-small16, features-small14-reg4, features-tiny4, fmnist-recipe, kernels, pipeline-fmnist or pipeline-folder.")
    var config = "fmnist-tiny"
    @Option(help: "Kernel threads, or augmentation workers for the pipeline-* configurations.") var threads: Int = 2
    @Option(help: "pipeline-folder: a folder of images to use instead of synthetic JPEGs.") var data: String?
    @Option(help: "Timed repetitions (after 2 warm-up ones).") var repeats = 5
    @Flag var json = false
    @Option(help: "The C kernels to run: auto (AVX-512 parts where the CPU has them), avx2 or portable.")
    var kernels = "auto"
    @Flag(help: "Time the last block for the class token only against the full last block, alternating in one process.")
    var compareLastBlock = false
    @Option(help: "The matmuls' precision: float32 (OpenBLAS) or bfloat16 (AVX-512 BF16; float32 on CPUs without it).")
    var matmulPrecision = "float32"
    @Option(help: "The bfloat16 kernel: auto (AMX where the CPU has it, else AVX-512 BF16) or avx512.")
    var bfloat16Kernel = "auto"

    func run() throws {
        Parallel.setThreadCount(threads)
        switch kernels {
        case "auto": break
        case "avx2": dino_kernels_allow_avx512(0)
        case "portable": dino_kernels_force_portable(1)
        default: throw ValidationError("--kernels takes auto, avx2 or portable")
        }
        guard let precision = GEMM.Precision(rawValue: matmulPrecision) else {
            throw ValidationError("--matmul-precision takes float32 or bfloat16")
        }
        GEMM.precision = precision
        switch bfloat16Kernel {
        case "auto": GEMM.allowsAMX = true
        case "avx512": GEMM.allowsAMX = false
        default: throw ValidationError("--bfloat16-kernel takes auto or avx512")
        }
        if config == "kernels" { return kernelBenchmarks() }
        if PipelineBenchmark.names.contains(config) {
            let result = try PipelineBenchmark(name: config, workers: threads, repeats: repeats, dataPath: data).run()
            if json {
                print(String(decoding: try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys]), as: UTF8.self))
            } else {
                print(String(format: "%@ (%@): %.0f images/s on %d worker(s), %.0f per worker, peak RSS %.0f MiB", config as NSString,
                             result["data"] as! String as NSString, result["images_per_s"] as! Double, threads,
                             result["images_per_s_per_worker"] as! Double, result["peak_rss_mib"] as! Double))
            }
            return
        }
        guard let c = BenchConfig.all.first(where: { $0.name == config }) else {
            throw ValidationError("unknown config \(config): \(BenchConfig.all.map(\.name).joined(separator: ", ")), kernels, \(PipelineBenchmark.names.joined(separator: ", "))")
        }
        if compareLastBlock { return try lastBlockComparison(c) }
        let communicator: any Communicator = MPICommunicator.isLaunchedByMPI ? try MPICommunicator() : SingleProcess()
        guard c.training || communicator.size == 1 else { throw ValidationError("under mpirun, time a training configuration") }
        let peak = sgemmPeak(threads: threads)
        let step = makeTimedStep(c, classTokenOnly: true, communicator: communicator)
        var times: [Double] = []
        var cpuStart = 0.0, wallStart = Date()
        for i in 0..<(repeats + 2) {
            if i == 2 { cpuStart = processCPUSeconds(); wallStart = Date() }
            let t = Date()
            try step()
            if i >= 2 { times.append(Date().timeIntervalSince(t)) }
        }
        // Cores kept busy over the timed steps: 2.0 on 2 threads means no thread waits.
        let coresBusy = (processCPUSeconds() - cpuStart) / Date().timeIntervalSince(wallStart)
        let seconds = median(times)
        // Data parallel: the allreduce of the gradient (every parameter, once per step) timed alone.
        var distributed: [String: Any] = ["processes": communicator.size]
        if communicator.size > 1 {
            let count = ParameterLayout.model(c.vit, head: c.head).count, gradient = FloatBuffer(count: count)
            var reduces: [Double] = []
            for _ in 0..<5 {
                let t = Date()
                communicator.sum(gradient.pointer, count: count)
                reduces.append(Date().timeIntervalSince(t))
            }
            distributed["allreduce_bytes_per_step"] = 4 * count
            distributed["allreduce_seconds"] = median(reduces)
            distributed["allreduce_share_of_step"] = median(reduces) / seconds
            (communicator as? MPICommunicator)?.finish()
            if !communicator.isPrimary { return }
        }
        let gflops = c.flopsPerStep() / seconds / 1e9, executed = c.flopsPerStep(executed: true) / seconds / 1e9
        let result: [String: Any] = [
            "program": "dino", "config": c.name, "threads": threads, "batch": c.batch,
            "images_per_s": Double(c.batch) / seconds, "seconds_per_step": seconds, "gflops": gflops,
            "sgemm_peak_gflops": peak, "share_of_peak": gflops / peak, "peak_rss_mib": peakResidentMiB(),
            "flops_per_step": c.flopsPerStep(), "executed_flops_per_step": c.flopsPerStep(executed: true),
            "executed_gflops": executed, "executed_share_of_peak": executed / peak, "cores_busy": coresBusy,
            "blas_core": Parallel.blasCoreName, "matmul_precision": GEMM.precision.rawValue,
            "bfloat16_kernel": GEMM.precision == .bfloat16 ? GEMM.bfloat16KernelName ?? "none" : "none",
            "kernels": dino_kernels_use_avx512() != 0 ? "avx512" : dino_kernels_use_avx2() != 0 ? "avx2" : "portable",
        ].merging(distributed) { a, _ in a }
        if json {
            print(String(decoding: try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys]), as: UTF8.self))
        } else {
            print(String(format: "%@: %.1f images/s, %.3f s/step, %.1f GFLOP/s of the official model's work (%.0f%% of sgemm peak %.1f); computed: %.1f GFLOP/s (%.0f%%), peak RSS %.0f MiB",
                         c.name, Double(c.batch) / seconds, seconds, gflops, 100 * gflops / peak, peak, executed,
                         100 * executed / peak, peakResidentMiB()))
        }
    }

    /// Seconds per step with the last block for the class token only and with the full last block, timed
    /// alternately in one process (this VM's speed drifts by ±20% between runs; alternation cancels it).
    func lastBlockComparison(_ c: BenchConfig) throws {
        let steps = [true, false].map { makeTimedStep(c, classTokenOnly: $0) }
        var times: [[Double]] = [[], []]
        for i in 0..<(repeats + 2) {
            for (v, step) in steps.enumerated() {
                let t = Date()
                try step()
                if i >= 2 { times[v].append(Date().timeIntervalSince(t)) }
            }
        }
        let (classOnly, full) = (median(times[0]), median(times[1]))
        let pairs = zip(times[0], times[1]).map { $1 / $0 }
        print(String(format: "%@: last block for the class token only %.3f s/step (%.1f images/s), full last block %.3f s/step (%.1f images/s): %.3fx (median of per-pair ratios %.3fx)",
                     c.name as NSString, classOnly, Double(c.batch) / classOnly, full, Double(c.batch) / full, full / classOnly, median(pairs)))
    }

    /// Kernel throughput at the model's shapes (ViT-T/4 at 28 px, batch 128 images of 50 tokens).
    func kernelBenchmarks() {
        let peak = sgemmPeak(threads: threads)
        print(String(format: "sgemm peak (OpenBLAS %@ kernels, own threading, best of 5 at 2048^3): %.1f GFLOP/s on %d thread(s); the linear layers below in %@",
                     Parallel.blasCoreName, peak, threads, GEMM.precision.rawValue))
        let (b, n, d, h) = (128, 50, 192, 3)
        let t = b * n
        var g = RandomGenerator(seed: 2)
        func random(_ count: Int) -> FloatBuffer { let x = FloatBuffer(count: count); for i in 0..<count { x[i] = Float(g.nextNormal()) }; return x }
        func time(_ body: () -> Void) -> Double {
            body()
            var s: [Double] = []
            for _ in 0..<repeats { let start = Date(); body(); s.append(Date().timeIntervalSince(start)) }
            return median(s)
        }
        let x = random(t * d), w = random(4 * d * d), out = FloatBuffer(count: t * 4 * d), hiddenGradient = random(t * 4 * d)
        for (name, k, m) in [("qkv", d, 3 * d), ("proj", d, d), ("fc1", d, 4 * d), ("fc2", 4 * d, d)] {
            let input = k == d ? x : out
            let s = time { Linear.forward(output: out.pointer, input: input.pointer, weight: w.pointer, bias: nil, rows: t, inputSize: k, outputSize: m) }
            print(String(format: "linear %-4@ (%d x %d) x (%d x %d)^T: %.1f GFLOP/s (%.0f%% of peak)", name as NSString, t, k, m, k,
                         2 * Double(t * k * m) / s / 1e9, 100 * 2 * Double(t * k * m) / s / 1e9 / peak))
        }
        let dInput = FloatBuffer(count: t * 4 * d), dWeight = FloatBuffer(count: 4 * d * d)
        for (name, k, m) in [("qkv", d, 3 * d), ("proj", d, d), ("fc1", d, 4 * d), ("fc2", 4 * d, d)] {
            let input = k == d ? x : out
            // dInput (t × k) += dOutput (t × m) · W (m × k); dWeight (m × k) += dOutputᵀ · input (t × k).
            let sx = time { GEMM.multiply(transposeA: false, transposeB: false, m: t, n: k, k: m, a: hiddenGradient.pointer, lda: m,
                                          b: w.pointer, ldb: k, beta: 1, c: dInput.pointer, ldc: k) }
            let sw = time { GEMM.multiply(transposeA: true, transposeB: false, m: m, n: k, k: t, a: hiddenGradient.pointer, lda: m,
                                          b: input.pointer, ldb: k, beta: 1, c: dWeight.pointer, ldc: k) }
            let flops = 2 * Double(t * k * m)
            print(String(format: "linear %-4@ backward: dInput %.1f GFLOP/s, dWeight %.1f GFLOP/s (%.0f%%, %.0f%% of peak)", name as NSString,
                         flops / sx / 1e9, flops / sw / 1e9, 100 * flops / sx / 1e9 / peak, 100 * flops / sw / 1e9 / peak))
        }
        withExtendedLifetime((dInput, dWeight)) {}
        let qkv = random(t * 3 * d), probs = FloatBuffer(count: b * h * n * n), att = FloatBuffer(count: t * d)
        let attentionFlops = 4 * Double(b * n * n * d)
        let sf = time { Attention.forward(output: att.pointer, probabilities: probs.pointer, qkv: qkv.pointer, batch: b, tokens: n, channels: d, heads: h) }
        print(String(format: "attention forward (fused, %d images x %d heads x %d tokens): %.1f GFLOP/s", b, h, n, attentionFlops / sf / 1e9))
        let dqkv = FloatBuffer(count: t * 3 * d)
        let sb = time { Attention.backward(dQKV: dqkv.pointer, dOutput: att.pointer, qkv: qkv.pointer, probabilities: probs.pointer, batch: b, tokens: n, channels: d, heads: h) }
        print(String(format: "attention backward (fused): %.1f GFLOP/s", 2 * attentionFlops / sb / 1e9))
        // The 30-minute recipe's crops: 64 images x 2 global crops of 10 tokens, x 6 local crops of 5; 3 heads of 32.
        for (b, n) in [(128, 10), (384, 5)] {
            let (c, h) = (96, 3)
            let qkv = random(b * n * 3 * c), probs = FloatBuffer(count: b * h * n * n), att = FloatBuffer(count: b * n * c)
            let dqkv = FloatBuffer(count: b * n * 3 * c)
            let sf = time { Attention.forward(output: att.pointer, probabilities: probs.pointer, qkv: qkv.pointer, batch: b, tokens: n, channels: c, heads: h) }
            let sb = time { Attention.backward(dQKV: dqkv.pointer, dOutput: att.pointer, qkv: qkv.pointer, probabilities: probs.pointer, batch: b, tokens: n, channels: c, heads: h) }
            print(String(format: "attention at the Fashion-MNIST recipe's shapes (%d crops x %d heads x %d tokens): forward %.2f us, backward %.2f us per (crop, head) block",
                         b, h, n, 1e6 * sf / Double(b * h), 1e6 * sb / Double(b * h)))
            withExtendedLifetime((qkv, probs, att, dqkv)) {}
        }
        do {  // ViT-S/16 at 224 px: 197 tokens, 6 heads of 64; batch 16
            let (b, n, c, h) = (16, 197, 384, 6)
            let qkv = random(b * n * 3 * c), probs = FloatBuffer(count: b * h * n * n), att = FloatBuffer(count: b * n * c)
            let dqkv = FloatBuffer(count: b * n * 3 * c), flops = 4 * Double(b * n * n * c)
            let sf = time { Attention.forward(output: att.pointer, probabilities: probs.pointer, qkv: qkv.pointer, batch: b, tokens: n, channels: c, heads: h) }
            let sb = time { Attention.backward(dQKV: dqkv.pointer, dOutput: att.pointer, qkv: qkv.pointer, probabilities: probs.pointer, batch: b, tokens: n, channels: c, heads: h) }
            print(String(format: "attention at ViT-S/16 shapes (%d images x %d heads x %d tokens): forward %.1f GFLOP/s, backward %.1f GFLOP/s",
                         b, h, n, flops / sf / 1e9, 2 * flops / sb / 1e9))
            withExtendedLifetime((qkv, probs, att, dqkv)) {}
        }
        let mean = FloatBuffer(count: t), rstd = FloatBuffer(count: t), y = FloatBuffer(count: t * d), ones = random(d)
        let sl = time { LayerNorm.forward(output: y.pointer, mean: mean.pointer, rstd: rstd.pointer, input: x.pointer, weight: ones.pointer, bias: ones.pointer, rows: t, columns: d) }
        print(String(format: "layernorm forward (%d x %d): %.1f GB/s", t, d, 8 * Double(t * d) / sl / 1e9))
        for columns in [d, 4 * d] {  // the bias gradients of proj/fc2 and of fc1: Σ over 6,400 rows
            let sums = FloatBuffer(count: columns)
            let sb = time { ColumnSums.accumulate(dWeight: nil, dBias: sums.pointer, dOutput: hiddenGradient.pointer, rows: t, columns: columns) }
            print(String(format: "column sums (%d x %d, bias gradient): %.1f GB/s", t, columns, 4 * Double(t * columns) / sb / 1e9))
            if columns == d {  // LayerNorm's parameter gradients, with the statistics of its forward above
                let lnWeight = FloatBuffer(count: columns)
                let sw = time { ColumnSums.accumulate(dWeight: lnWeight.pointer, dBias: sums.pointer, dOutput: hiddenGradient.pointer,
                                                      input: x.pointer, mean: mean.pointer, rstd: rstd.pointer, rows: t, columns: columns) }
                print(String(format: "column sums (%d x %d, LayerNorm weight and bias gradients): %.1f GB/s", t, columns, 8 * Double(t * columns) / sw / 1e9))
                withExtendedLifetime(lnWeight) {}
            }
            withExtendedLifetime(sums) {}
        }
        let hidden = random(t * 4 * d)
        let sg = time { GELU.forward(output: out.pointer, input: hidden.pointer, count: t * 4 * d) }
        print(String(format: "gelu forward (%d values): %.1f GB/s, %.0f M values/s", t * 4 * d, 8 * Double(t * 4 * d) / sg / 1e9, Double(t * 4 * d) / sg / 1e6))
        withExtendedLifetime((x, w, out, hiddenGradient, qkv, probs, att, dqkv, mean, rstd, y, ones, hidden)) {}
    }
}

Bench.main()
