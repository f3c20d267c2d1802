import DinoData
import DinoKernels
import DinoModel
import Foundation
import Yams

/// A training recipe. Keys are the official `main_dino.py` argument names where one exists
/// (`arch`, `patch_size`, `out_dim`, `momentum_teacher`, …), plus keys for data, crop sizes, small
/// models and evaluation during training. Defaults are the official defaults.
public struct Recipe: Equatable, Sendable {
    // Model (official names)
    public var arch = "vit_small"
    public var patch_size = 16
    public var out_dim = 65536
    public var norm_last_layer = true
    public var use_bn_in_head = false
    public var drop_path_rate = 0.1
    // Small models and the head's shape
    public var embed_dim = 0, depth = 0, num_heads = 0          // arch: custom
    /// The feed-forward's hidden width over the embedding width (timm's and the official `mlp_ratio`).
    public var mlp_ratio = 4
    public var head_hidden_dim = 2048, bottleneck_dim = 256, head_nlayers = 3
    /// Shifted patch tokenization (not in the official DINO): the patch embedding also sees four copies of
    /// the image shifted diagonally by half a patch.
    public var shifted_patches = false
    /// DINOv2's backbone options (its config names): register tokens, LayerScale's initial value (0: none),
    /// the feed-forward (`mlp` or `swiglufused`), and the position-embedding interpolation.
    public var num_register_tokens = 0
    public var layerscale = 0.0
    public var ffn_layer = "mlp"
    public var interpolate_offset = 0.1
    public var interpolate_antialias = false
    // Teacher and loss
    public var momentum_teacher = 0.996
    public var teacher_temp = 0.04
    public var warmup_teacher_temp = 0.04
    public var warmup_teacher_temp_epochs = 0
    public var student_temp = 0.1
    public var center_momentum = 0.9
    /// Teacher targets: `centering` (DINO) or `sinkhorn_knopp` (DINOv2's option; the center is then unused).
    public var centering = "centering"
    /// Weight of DINOv2's KoLeo regularizer on the student's global-crop CLS features (0: off).
    public var koleo_loss_weight = 0.0
    /// The KoLeo weight at the last step, reached by a cosine from `koleo_loss_weight` as the weight decay's
    /// (-1: constant, as in DINOv2).
    public var koleo_loss_weight_end = -1.0
    /// Weight of DINOv2's masked-patch (iBOT) term (0: off). The student's global crops then have some
    /// patches replaced by a learned `mask_token`, and learn the teacher's head output at those patches.
    public var ibot_loss_weight = 0.0
    /// Share of the global crops that get masked (DINOv2's `mask_sample_probability`).
    public var ibot_mask_sample_probability = 0.5
    /// Range of the share of a masked crop's patches that are masked (DINOv2's `mask_ratio_min_max`).
    public var ibot_mask_ratio_min_max = [0.1, 0.5]
    // Optimization
    public var optimizer = "adamw"
    public var lr = 0.0005
    public var min_lr = 1e-6
    public var warmup_epochs = 10
    /// The lr warm-up in steps, when set (-1: `warmup_epochs` epochs, raised to at least
    /// min(`Recipe.warmupFloorSteps`, a quarter of the run) so that a 62-step epoch still gets a warm-up,
    /// and at most half of the run, so that a time box that fits few steps still reaches the peak lr).
    public var warmup_steps = -1
    public var weight_decay = 0.04
    public var weight_decay_end = 0.4
    public var clip_grad = 3.0
    public var batch_size = 64
    public var epochs = 100
    public var freeze_last_layer = 1
    public var seed = 0
    // Continued training from published weights
    /// A backbone to start from (any file `dino` reads: official DINO / DINOv2, timm, Hugging Face, this
    /// project's): the architecture and the input normalization are the file's, and so is the DINO head
    /// when the file has one (an official training checkpoint). "" trains from the official init.
    public var init_from = ""
    /// Steps at the start during which only the head trains (the backbone and its teacher stay as loaded),
    /// after which the backbone's lr ramps up linearly over as many steps: a fresh head's targets are
    /// noise, and their gradients would wreck a published backbone. -1: automatic,
    /// with `init_from` and no head in the file max(one epoch, 200 steps) capped at half of `epochs`, 0 otherwise.
    public var freeze_backbone_steps = -1
    // Multi-crop
    public var global_crops_scale = [0.4, 1.0]
    public var local_crops_number = 8
    public var local_crops_scale = [0.05, 0.4]
    public var global_crop_size = 224
    public var local_crop_size = 96
    public var flip_prob = 0.5
    public var color_jitter = [0.4, 0.4, 0.2, 0.1]
    public var color_jitter_prob = 0.8
    public var grayscale_prob = 0.2
    /// Gaussian blur probability for global crop 1, global crop 2, local crops.
    public var blur_prob = [1.0, 0.1, 0.5]
    public var blur_sigma = [0.1, 2.0]
    public var solarization_prob = 0.2
    // Data
    public var dataset = "fashion-mnist"
    public var data_path = ""
    public var in_chans = 3
    /// Per-channel normalization; empty means the dataset's (ImageNet for folders).
    public var mean: [Double] = []
    public var std: [Double] = []
    /// Use only the first N training images (0: all), for quick runs.
    public var train_subset = 0
    public var on_bad_image = "skip"
    public var num_workers = 2
    // Run control
    /// Stop after this many steps (0: run every epoch).
    public var max_steps = 0
    /// Time box in minutes of training (0: off). The step time is measured over the first epoch (or the
    /// first 10% of the budget, if sooner); the lr, weight-decay and teacher-momentum cosines are then
    /// fitted to end at the last step that fits (at most `epochs`), and training stops at the limit in any case.
    public var max_minutes = 0.0
    /// What a detected collapse does: `warn` (a warning, training goes on), `stop` (an error with the
    /// advice; the last checkpoint is kept), or `restart` (half the lr, twice the warm-up, from the last
    /// checkpoint written while the teacher was healthy, or from the start; at most twice, then `stop`).
    public var on_collapse = "restart"
    /// Checkpoint every N steps (0: only at epoch ends), plus every `saveckp_freq` epochs a numbered copy.
    public var checkpoint_every = 0
    public var saveckp_freq = 20
    public var threads = 0
    /// The matmuls' precision: `float32`, or `bfloat16` (operands rounded to bfloat16, products summed in
    /// float: about 1.9x the GEMM rate on CPUs with AVX-512 BF16, 2–3x that on AMX tiles; float32 elsewhere).
    public var matmul_precision = "float32"
    // Evaluation during training
    /// Evaluate teacher k-NN on a held-out split every N epochs (0: never).
    public var knn_every = 0
    /// Held-out images for that k-NN (taken from the test split of Fashion-MNIST, or the end of a folder).
    public var knn_eval_size = 2000
    /// Training images used as the k-NN memory bank.
    public var knn_train_size = 10000
    public var knn_k = 20
    /// How the teacher's features are evaluated, in the checkpoints the run writes (`dino knn`,
    /// `features` and `linear` read it from there unless given `--resize`) and in the check above: the
    /// short side resized to this, then the central `global_crop_size` square (DINOv2's `resize_size`).
    /// 0: eval_knn.py's `global_crop_size` x 256/224. `global_crop_size` itself: the whole image, as
    /// small-image benchmarks (CIFAR) evaluate.
    public var eval_resize = 0
    /// Write attention maps of a few fixed images every N epochs (0: never).
    public var attention_every = 0
    public var attention_images = 4
    /// Why the recipe is what it is (not a key): written as the `_comment` of `RUN/recipe.yaml`.
    public var note = ""

    /// The least lr warm-up, in steps, that `warmup_epochs` gives (when it is not 0 and the run has
    /// four times as many steps): small data sets have short epochs, and an lr at its peak within 62
    /// steps made the teacher collapse on a 4,000-image folder.
    public static let warmupFloorSteps = 500

    /// The lr warm-up in steps for a run of `iterations` steps of `iterationsPerEpoch` each.
    public func warmupIterations(iterationsPerEpoch: Int, iterations: Int) -> Int {
        if warmup_steps >= 0 { return warmup_steps }
        let epochs = warmup_epochs * iterationsPerEpoch
        return warmup_epochs == 0 ? 0 : min(max(epochs, min(Self.warmupFloorSteps, iterations / 4)), max(iterations / 2, 1))
    }

    public init() {}

    /// The kinds of value a key holds.
    enum Kind { case int, double, bool, string, doubles(count: Int?) }

    struct Field {
        let name: String
        let kind: Kind
        let get: (Recipe) -> Any
        let set: (inout Recipe, Any) -> Void
    }

    static func int(_ name: String, _ path: WritableKeyPath<Recipe, Int>) -> Field {
        Field(name: name, kind: .int, get: { $0[keyPath: path] }, set: { $0[keyPath: path] = $1 as! Int })
    }
    static func double(_ name: String, _ path: WritableKeyPath<Recipe, Double>) -> Field {
        Field(name: name, kind: .double, get: { $0[keyPath: path] }, set: { $0[keyPath: path] = $1 as! Double })
    }
    static func bool(_ name: String, _ path: WritableKeyPath<Recipe, Bool>) -> Field {
        Field(name: name, kind: .bool, get: { $0[keyPath: path] }, set: { $0[keyPath: path] = $1 as! Bool })
    }
    static func string(_ name: String, _ path: WritableKeyPath<Recipe, String>) -> Field {
        Field(name: name, kind: .string, get: { $0[keyPath: path] }, set: { $0[keyPath: path] = $1 as! String })
    }
    static func doubles(_ name: String, _ path: WritableKeyPath<Recipe, [Double]>, count: Int?) -> Field {
        Field(name: name, kind: .doubles(count: count), get: { $0[keyPath: path] }, set: { $0[keyPath: path] = $1 as! [Double] })
    }

    /// Every key, in the order the merged recipe is written.
    static let fields: [Field] = [
        string("arch", \.arch), int("patch_size", \.patch_size), int("embed_dim", \.embed_dim), int("depth", \.depth),
        int("num_heads", \.num_heads), int("mlp_ratio", \.mlp_ratio), int("out_dim", \.out_dim), bool("norm_last_layer", \.norm_last_layer),
        bool("use_bn_in_head", \.use_bn_in_head), int("head_hidden_dim", \.head_hidden_dim),
        int("bottleneck_dim", \.bottleneck_dim), int("head_nlayers", \.head_nlayers), double("drop_path_rate", \.drop_path_rate),
        bool("shifted_patches", \.shifted_patches), int("num_register_tokens", \.num_register_tokens),
        double("layerscale", \.layerscale), string("ffn_layer", \.ffn_layer), double("interpolate_offset", \.interpolate_offset),
        bool("interpolate_antialias", \.interpolate_antialias),
        double("momentum_teacher", \.momentum_teacher), double("teacher_temp", \.teacher_temp),
        double("warmup_teacher_temp", \.warmup_teacher_temp), int("warmup_teacher_temp_epochs", \.warmup_teacher_temp_epochs),
        double("student_temp", \.student_temp), double("center_momentum", \.center_momentum),
        string("centering", \.centering), double("koleo_loss_weight", \.koleo_loss_weight),
        double("koleo_loss_weight_end", \.koleo_loss_weight_end),
        double("ibot_loss_weight", \.ibot_loss_weight), double("ibot_mask_sample_probability", \.ibot_mask_sample_probability),
        doubles("ibot_mask_ratio_min_max", \.ibot_mask_ratio_min_max, count: 2),
        string("optimizer", \.optimizer), double("lr", \.lr), double("min_lr", \.min_lr), int("warmup_epochs", \.warmup_epochs),
        int("warmup_steps", \.warmup_steps),
        double("weight_decay", \.weight_decay), double("weight_decay_end", \.weight_decay_end), double("clip_grad", \.clip_grad),
        int("batch_size", \.batch_size), int("epochs", \.epochs), int("freeze_last_layer", \.freeze_last_layer), int("seed", \.seed),
        string("init_from", \.init_from), int("freeze_backbone_steps", \.freeze_backbone_steps),
        doubles("global_crops_scale", \.global_crops_scale, count: 2), int("local_crops_number", \.local_crops_number),
        doubles("local_crops_scale", \.local_crops_scale, count: 2), int("global_crop_size", \.global_crop_size),
        int("local_crop_size", \.local_crop_size), double("flip_prob", \.flip_prob),
        doubles("color_jitter", \.color_jitter, count: 4), double("color_jitter_prob", \.color_jitter_prob),
        double("grayscale_prob", \.grayscale_prob), doubles("blur_prob", \.blur_prob, count: 3),
        doubles("blur_sigma", \.blur_sigma, count: 2), double("solarization_prob", \.solarization_prob),
        string("dataset", \.dataset), string("data_path", \.data_path), int("in_chans", \.in_chans),
        doubles("mean", \.mean, count: nil), doubles("std", \.std, count: nil), int("train_subset", \.train_subset),
        string("on_bad_image", \.on_bad_image), int("num_workers", \.num_workers), int("max_steps", \.max_steps), double("max_minutes", \.max_minutes),
        string("on_collapse", \.on_collapse),
        int("checkpoint_every", \.checkpoint_every), int("saveckp_freq", \.saveckp_freq), int("threads", \.threads),
        string("matmul_precision", \.matmul_precision),
        int("knn_every", \.knn_every), int("knn_eval_size", \.knn_eval_size), int("knn_train_size", \.knn_train_size),
        int("knn_k", \.knn_k), int("eval_resize", \.eval_resize), int("attention_every", \.attention_every), int("attention_images", \.attention_images),
    ]

    /// Official spellings accepted as aliases.
    static let aliases = ["batch_size_per_gpu": "batch_size"]

    static func field(_ name: String) throws -> Field {
        let key = aliases[name] ?? name
        guard let f = fields.first(where: { $0.name == key }) else {
            let names = fields.map(\.name)
            let close = closestName(to: key, among: names).map { [$0] }
                ?? Array(names.filter { $0.hasPrefix(String(key.prefix(3))) }.prefix(4))
            throw DinoError("unknown recipe key '\(name)'" + (close.isEmpty ? "" : " (did you mean \(close.joined(separator: ", "))?)")
                            + "; Recipes/README.md lists every key")
        }
        return f
    }

    /// Sets `key` from a parsed YAML value, checking its type.
    public mutating func set(_ key: String, _ value: Any, source: String) throws {
        let f = try Self.field(key)
        func wrong(_ expected: String) -> DinoError {
            if value is NSNull { return DinoError("\(source): key '\(key)' has no value; give \(expected) (or leave the key out for its default)") }
            if let text = value as? String, text.trimmingCharacters(in: .whitespaces).isEmpty {
                return DinoError("\(source): key '\(key)' has no value; give \(expected)")
            }
            let got = (value as? [Any]).map { "a list of \($0.count)" } ?? (value is [AnyHashable: Any] ? "a mapping"
                : value is String ? "'\("\(value)".prefix(40))'" : String("\(value)".prefix(40)))
            return DinoError("\(source): key '\(key)' expects \(expected), got \(got)")
        }
        func number(_ v: Any) -> Double? {
            if let d = v as? Double { return d }
            if let i = v as? Int { return Double(i) }
            if let text = v as? String { return Double(text) }  // YAML 1.1 reads 1e-6 as a string
            return nil
        }
        switch f.kind {
        case .int:
            if let i = value as? Int { f.set(&self, i) }
            else if let d = value as? Double, d == d.rounded(), abs(d) < 1e15 { f.set(&self, Int(d)) }
            else { throw wrong("an integer") }
        case .double:
            guard let d = number(value) else { throw wrong("a number") }
            f.set(&self, d)
        case .bool:
            guard let b = value as? Bool else { throw wrong("true or false") }
            f.set(&self, b)
        case .string:
            if let s = value as? String { f.set(&self, s) }
            else if let i = value as? Int { f.set(&self, String(i)) }
            else { throw wrong("a string") }
        case .doubles(let count):
            let list = (value as? [Any]) ?? (number(value).map { [$0] } ?? [])
            let numbers = list.compactMap(number)
            guard numbers.count == list.count, count == nil || numbers.count == count else {
                throw wrong(count.map { "a list of \($0) numbers" } ?? "a list of numbers")
            }
            f.set(&self, numbers)
        }
    }

    /// Applies a YAML mapping: every key must be known and well-typed.
    public mutating func apply(yaml text: String, source: String) throws {
        try apply(parsed: Self.parseYAML(text, source: source), source: source)
    }

    /// Applies a parsed document (nil: empty, nothing to apply).
    mutating func apply(parsed: Any?, source: String) throws {
        guard let parsed else { return }
        guard let mapping = parsed as? [String: Any] else { throw DinoError("\(source) must be a mapping of key: value") }
        for key in mapping.keys.sorted() where !key.hasPrefix("_") {   // `_comment` and friends are notes
            try set(key, mapping[key]!, source: source)
        }
    }

    /// Applies `key=value` (the value parsed as YAML, so `0.5`, `true`, `[0.4, 1.0]` work).
    public mutating func apply(override text: String) throws {
        guard let eq = text.firstIndex(of: "=") else {
            throw DinoError("--set takes key=value, got '\(text)'")
        }
        let key = String(text[..<eq]).trimmingCharacters(in: .whitespaces)
        let raw = String(text[text.index(after: eq)...])
        let value: Any = (try? Self.parseYAML(raw, source: "--set")).flatMap { $0 } ?? raw
        try set(key, value, source: "--set \(text)")
    }

    /// Loads a recipe file, then applies overrides, then checks the values.
    public static func load(path: String?, overrides: [String] = [], validate: Bool = true) throws -> Recipe {
        var recipe = Recipe()
        if let path {
            guard let text = String(data: try readInputFile(URL(fileURLWithPath: path), what: "recipe"), encoding: .utf8) else {
                throw DinoError("recipe \(path) is not UTF-8 text: give a YAML file")
            }
            // Parsed to nothing (empty, or comments only): a mistake, not a request for the default recipe.
            guard let parsed = try Self.parseYAML(text, source: path) else {
                throw DinoError("recipe \(path) is empty: give at least one key (Recipes/README.md lists them)")
            }
            try recipe.apply(parsed: parsed, source: path)
        }
        for o in overrides { try recipe.apply(override: o) }
        if validate { try recipe.validate() }
        return recipe
    }

    /// The merged recipe as YAML, every key in table order, after `note` as a `_comment`.
    public var yaml: String {
        (note.isEmpty ? "" : "_comment: >\n" + note.split(separator: "\n").map { "  " + $0 + "\n" }.joined())
        + Self.fields.map { f -> String in
            let v = f.get(self)
            switch v {
            case let s as String: return "\(f.name): \(Self.doubleQuoted(s))"
            case let d as Double: return "\(f.name): \(d)"
            case let list as [Double]: return "\(f.name): [\(list.map { "\($0)" }.joined(separator: ", "))]"
            default: return "\(f.name): \(v)"
            }
        }.joined(separator: "\n") + "\n"
    }

    /// `text` as a YAML double-quoted scalar that reads back to the same text: backslash, quote and
    /// every control character escaped (a data path may hold any of them).
    static func doubleQuoted(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            case "\r": out += "\\r"
            default:
                if scalar.value < 0x20 || scalar.value == 0x7F { out += String(format: "\\x%02X", scalar.value) }
                else { out.unicodeScalars.append(scalar) }
            }
        }
        return out + "\""
    }

    public func validate() throws {
        func check(_ ok: Bool, _ message: String) throws { if !ok { throw DinoError("recipe: \(message)") } }
        try check(optimizer == "adamw", "optimizer '\(optimizer)' is not supported; use adamw")
        try check(!use_bn_in_head, "use_bn_in_head: true is not supported (the official ViT recipes use false)")
        try check(batch_size >= 1, "batch_size must be at least 1")
        try check(epochs >= 1, "epochs must be at least 1")
        try check(local_crops_number >= 0, "local_crops_number must be 0 or more")
        try check(global_crop_size >= patch_size && (local_crops_number == 0 || local_crop_size >= patch_size),
                  "crop sizes (\(global_crop_size), \(local_crop_size)) must be at least patch_size \(patch_size)")
        try check(global_crops_scale[0] > 0 && global_crops_scale[0] <= global_crops_scale[1] && global_crops_scale[1] <= 1,
                  "global_crops_scale must be 0 < low <= high <= 1")
        try check(local_crops_scale[0] > 0 && local_crops_scale[0] <= local_crops_scale[1] && local_crops_scale[1] <= 1,
                  "local_crops_scale must be 0 < low <= high <= 1")
        try check(teacher_temp > 0 && warmup_teacher_temp > 0 && student_temp > 0, "temperatures must be positive")
        try check(warmup_teacher_temp_epochs <= epochs, "warmup_teacher_temp_epochs (\(warmup_teacher_temp_epochs)) exceeds epochs (\(epochs))")
        try check(in_chans == 1 || in_chans == 3, "in_chans must be 1 or 3")
        try check(mean.count == std.count && (mean.isEmpty || mean.count == 1 || mean.count == in_chans),
                  "mean and std need 1 or in_chans values each")
        try check(BadImagePolicy(rawValue: on_bad_image) != nil, "on_bad_image must be skip or fail")
        try check(["warn", "stop", "restart"].contains(on_collapse), "on_collapse must be warn, stop or restart")
        try check(GEMM.Precision(rawValue: matmul_precision) != nil, "matmul_precision must be float32 or bfloat16")
        try check(DINOLoss.TeacherTargets(rawValue: centering) != nil,
                  "centering '\(centering)' is not supported; use centering or sinkhorn_knopp")
        try check(koleo_loss_weight >= 0, "koleo_loss_weight must be 0 or more")
        try check(koleo_loss_weight_end == -1 || (koleo_loss_weight_end >= 0 && koleo_loss_weight_end.isFinite),
                  "koleo_loss_weight_end must be 0 or more (or -1: the same as koleo_loss_weight)")
        try check(ibot_loss_weight >= 0 && ibot_loss_weight.isFinite, "ibot_loss_weight must be 0 (off) or more")
        try check(ibot_mask_sample_probability >= 0 && ibot_mask_sample_probability <= 1,
                  "ibot_mask_sample_probability must be in [0, 1]")
        try check(ibot_mask_ratio_min_max[0] >= 0 && ibot_mask_ratio_min_max[0] <= ibot_mask_ratio_min_max[1]
                  && ibot_mask_ratio_min_max[1] <= 1, "ibot_mask_ratio_min_max must be 0 <= low <= high <= 1")
        try check(max_minutes >= 0 && max_minutes.isFinite, "max_minutes must be 0 (off) or a positive number of minutes")
        try check(out_dim >= 2 && head_nlayers >= 1, "out_dim must be at least 2 and head_nlayers at least 1")
        try check(drop_path_rate >= 0 && drop_path_rate < 1, "drop_path_rate must be in [0, 1)")
        // Ranges that keep every size and schedule finite: a typo must not become a crash or an allocation.
        try check(batch_size <= 65536, "batch_size must be at most 65536")
        try check(epochs <= 1_000_000 && local_crops_number <= 64, "epochs (at most 1000000) or local_crops_number (at most 64) is out of range")
        try check(global_crop_size <= 4096 && local_crop_size >= 1 && local_crop_size <= 4096, "crop sizes must be 1...4096")
        try check([lr, min_lr, weight_decay, weight_decay_end, clip_grad].allSatisfy { $0 >= 0 && $0.isFinite },
                  "lr, min_lr, weight_decay, weight_decay_end and clip_grad must be finite and 0 or more")
        try check((0...1).contains(momentum_teacher) && (0...1).contains(center_momentum),
                  "momentum_teacher and center_momentum must be in [0, 1]")
        try check([teacher_temp, warmup_teacher_temp, student_temp, koleo_loss_weight].allSatisfy(\.isFinite),
                  "temperatures and loss weights must be finite")
        try check([flip_prob, color_jitter_prob, grayscale_prob, solarization_prob].allSatisfy { (0...1).contains($0) }
                  && blur_prob.allSatisfy { (0...1).contains($0) }, "probabilities (flip_prob, *_prob) must be in [0, 1]")
        try check(color_jitter.allSatisfy { $0 >= 0 && $0.isFinite } && color_jitter[3] <= 0.5,
                  "color_jitter must be 4 finite values of 0 or more, hue at most 0.5")
        try check(blur_sigma[0] > 0 && blur_sigma[0] <= blur_sigma[1] && blur_sigma[1] <= 100, "blur_sigma must be 0 < low <= high <= 100")
        try check(mean.allSatisfy(\.isFinite) && std.allSatisfy { $0 > 0 && $0.isFinite }, "mean must be finite and std positive")
        let counts = [("warmup_epochs", warmup_epochs), ("warmup_teacher_temp_epochs", warmup_teacher_temp_epochs),
                      ("freeze_last_layer", freeze_last_layer), ("seed", seed), ("train_subset", train_subset), ("num_workers", num_workers),
                      ("max_steps", max_steps), ("checkpoint_every", checkpoint_every), ("saveckp_freq", saveckp_freq), ("threads", threads),
                      ("knn_every", knn_every), ("knn_eval_size", knn_eval_size), ("knn_train_size", knn_train_size),
                      ("attention_every", attention_every), ("attention_images", attention_images)]
        let negative = counts.filter { $0.1 < 0 }.map { "\($0.0) \($0.1)" }
        try check(negative.isEmpty, "counts must be 0 or more, not \(negative.joined(separator: ", "))")
        try check(knn_every == 0 || (knn_eval_size >= 1 && knn_train_size >= 1),
                  "knn_eval_size and knn_train_size must be at least 1 while knn_every is on (\(knn_every)); knn_every: 0 turns the check off")
        try check(num_workers <= 256 && threads <= 1024 && attention_images <= 1000, "num_workers (at most 256), threads (at most 1024) or attention_images (at most 1000) is out of range")
        try check(knn_k >= 1, "knn_k must be at least 1")
        try check(eval_resize == 0 || (eval_resize >= global_crop_size && eval_resize <= 65536),
                  "eval_resize must be 0 (global_crop_size x 256/224, as eval_knn.py) or global_crop_size (\(global_crop_size)) ... 65536, not \(eval_resize)")
        try check(freeze_backbone_steps >= -1, "freeze_backbone_steps must be -1 (automatic) or 0 or more")
        try check(warmup_steps >= -1 && warmup_steps <= 100_000_000, "warmup_steps must be -1 (from warmup_epochs) or 0...100000000")
        try check(patch_size >= 1 && patch_size <= 256, "patch_size must be 1...256")
        try check(mlp_ratio >= 1 && mlp_ratio <= 16, "mlp_ratio must be 1...16 (the feed-forward's width over embed_dim; 4 in every published ViT)")
    }
}

extension Recipe {
    /// The backbone the recipe describes (the official presets, or `custom`, with DINOv2's options).
    public func modelConfig() throws -> ViTConfig {
        var config = try ViTConfig.named(arch, imageSize: global_crop_size, patchSize: patch_size, inChannels: in_chans,
                                         embedDim: embed_dim > 0 ? embed_dim : nil, depth: depth > 0 ? depth : nil,
                                         numHeads: num_heads > 0 ? num_heads : nil, shiftedPatches: shifted_patches)
        config.mlpRatio = mlp_ratio
        config.registerCount = num_register_tokens
        config.layerScaleInit = Float(layerscale)
        if ffn_layer != "mlp" { config.ffnLayer = ffn_layer == "swiglu" ? "swiglufused" : ffn_layer }
        config.interpolateOffset = Float(interpolate_offset)
        config.interpolateAntialias = interpolate_antialias
        try config.validate()
        return config
    }

    /// The teacher targets named by `centering` (validated by `validate()`).
    public var teacherTargets: DINOLoss.TeacherTargets { DINOLoss.TeacherTargets(rawValue: centering) ?? .centering }

    /// The matmul precision named by `matmul_precision` (validated by `validate()`).
    public var matmulPrecision: GEMM.Precision { GEMM.Precision(rawValue: matmul_precision) ?? .float32 }

    /// The KoLeo weight at the last step: `koleo_loss_weight_end`, or `koleo_loss_weight` when that is -1.
    public var koleoLossWeightEnd: Double { koleo_loss_weight_end < 0 ? koleo_loss_weight : koleo_loss_weight_end }

    /// The patch masking of the masked-patch term, nil when `ibot_loss_weight` is 0.
    public var patchMasking: PatchMasking? {
        ibot_loss_weight > 0 ? PatchMasking(probability: ibot_mask_sample_probability,
                                            minimumRatio: ibot_mask_ratio_min_max[0], maximumRatio: ibot_mask_ratio_min_max[1]) : nil
    }

    /// The multi-crop augmentation the recipe describes, normalizing with `mean` and `std`.
    public func augmentationSettings(mean: [Float], std: [Float]) -> AugmentationSettings {
        var settings = AugmentationSettings(
            channels: in_chans, globalSize: global_crop_size, localSize: local_crop_size, localCount: local_crops_number,
            globalScale: (global_crops_scale[0], global_crops_scale[1]),
            localScale: (local_crops_scale[0], local_crops_scale[1]), mean: mean, std: std)
        settings.flipProbability = flip_prob
        settings.colorJitter = color_jitter
        settings.colorJitterProbability = color_jitter_prob
        settings.grayscaleProbability = grayscale_prob
        settings.blurProbabilities = blur_prob
        settings.blurSigma = (blur_sigma[0], blur_sigma[1])
        settings.solarizationProbability = solarization_prob
        return settings
    }
}
