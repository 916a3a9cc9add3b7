#!/usr/bin/env node
// ONNX Runtime peer for bench/run.sh, driven through onnxruntime-node's own JS
// API (the npm package ships libonnxruntime.so but no C headers).
//
//   node bench/ort_bench.js --onnx M.onnx --batch 1 --iters 20 --threads 2
//        [--warmup 5] [--ref M.onnx.ref_logits.npy] [--ort-dir bench/.cache/ort]
//        [--check-tessera M.onnx.tessera_logits.npy] [--serve]
//
// Builds the input tensor once, warms up, then times only `session.run` and
// prints one JSON object shaped like `tessera bench --format json`.
// With --ref it first checks ORT's logits against the PyTorch logits that
// export_vit_onnx.py saved for the same synthetic input (seed 0), so a broken
// export cannot produce a fast but meaningless figure. With --check-tessera
// it also checks them against Tessera's outputs on the image input that
// `export_vit_onnx.py parity` saved (M.onnx.tessera_input.npy); the observed
// differences are reported as `parity` and `parity_tessera`. With --serve it
// prints those facts after the warm-up and then answers bench/paired.py
// (each stdin line "W N": W untimed and N timed runs, {"ms": [...]} back).
'use strict';

const fs = require('fs');
const path = require('path');

function parseArgs(argv) {
  const a = { batch: 1, iters: 20, warmup: 5, threads: 2, onnx: null, ref: null, checkTessera: null,
              ortDir: path.join(__dirname, '.cache', 'ort'), tol: 1e-3, serve: false };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    if (k === '--serve') { a.serve = true; continue; }
    const v = () => {
      if (i + 1 >= argv.length) throw new Error(`${k} needs a value`);
      return argv[++i];
    };
    switch (k) {
      case '--onnx': a.onnx = v(); break;
      case '--batch': a.batch = parseInt(v(), 10); break;
      case '--iters': a.iters = parseInt(v(), 10); break;
      case '--warmup': a.warmup = parseInt(v(), 10); break;
      case '--threads': a.threads = parseInt(v(), 10); break;
      case '--ref': a.ref = v(); break;
      case '--check-tessera': a.checkTessera = v(); break;
      case '--tol': a.tol = parseFloat(v()); break;
      case '--ort-dir': a.ortDir = v(); break;
      default: throw new Error(`unknown argument ${k}`);
    }
  }
  if (!a.onnx) throw new Error('--onnx is required');
  return a;
}

// Minimal .npy reader: little-endian float32, C order (what numpy.save writes).
function readNpyF32(file) {
  const buf = fs.readFileSync(file);
  if (buf.toString('latin1', 1, 6) !== 'NUMPY') throw new Error(`${file}: not a .npy file`);
  const major = buf[6];
  const hlen = major === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const hstart = major === 1 ? 10 : 12;
  const header = buf.toString('latin1', hstart, hstart + hlen);
  if (!/'descr':\s*'<f4'/.test(header) || /'fortran_order':\s*True/.test(header)) {
    throw new Error(`${file}: expected little-endian float32 in C order, got ${header.trim()}`);
  }
  const shape = header.match(/'shape':\s*\(([^)]*)\)/)[1].split(',')
    .map((s) => s.trim()).filter((s) => s.length).map(Number);
  const data = buf.subarray(hstart + hlen);
  const out = new Float32Array(data.length / 4);
  for (let i = 0; i < out.length; i++) out[i] = data.readFloatLE(i * 4);
  return { shape, data: out };
}

// Fixed finite input for timing when no reference pair is given (with --ref
// the exporter's own input, saved next to its logits, is used instead).
function syntheticInput(n) {
  const x = new Float32Array(n);
  let s = 0x2545f491 >>> 0;  // xorshift32, fixed seed
  for (let i = 0; i < n; i++) {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    x[i] = (s / 4294967296) * 2 - 1;
  }
  return x;
}

function percentile(sorted, q) {  // linear interpolation, numpy's default
  if (!sorted.length) return NaN;
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.min(lo + 1, sorted.length - 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

async function main() {
  const a = parseArgs(process.argv.slice(2));
  const ort = require(path.join(path.resolve(a.ortDir), 'node_modules', 'onnxruntime-node'));
  const session = await ort.InferenceSession.create(a.onnx, {
    executionProviders: ['cpu'],
    intraOpNumThreads: a.threads,
    interOpNumThreads: 1,
    graphOptimizationLevel: 'all',
    executionMode: 'sequential',
  });
  const inName = session.inputNames[0];
  const outName = session.outputNames[0];
  if (inName !== 'pixel_values') throw new Error(`unexpected input name ${inName}`);

  // Runs `inputFile` through the session and compares with `logitsFile`
  // (max |diff| <= tol * max(1, max |ref|)); returns the observed difference.
  async function check(inputFile, logitsFile, what) {
    const refIn = readNpyF32(inputFile);
    const refOut = readNpyF32(logitsFile);
    if (refIn.shape[0] !== a.batch) throw new Error(`${what}: reference batch ${refIn.shape[0]} != --batch ${a.batch}`);
    const res = await session.run({ [inName]: new ort.Tensor('float32', refIn.data, refIn.shape) });
    const got = res[outName].data;
    if (got.length !== refOut.data.length) throw new Error(`${what}: logits size differs from reference`);
    let maxAbs = 0, maxRef = 0;
    for (let i = 0; i < got.length; i++) {
      if (!Number.isFinite(got[i])) throw new Error('ORT produced non-finite logits');
      maxAbs = Math.max(maxAbs, Math.abs(got[i] - refOut.data[i]));
      maxRef = Math.max(maxRef, Math.abs(refOut.data[i]));
    }
    if (maxAbs > a.tol * Math.max(1, maxRef)) {
      throw new Error(`ORT logits differ from ${what}: max |diff| ${maxAbs} (ref max ${maxRef})`);
    }
    return { input: refIn, diff: { max_abs_diff: maxAbs, max_abs_ref: maxRef } };
  }

  let dims = [a.batch, 3, 224, 224];
  let parity = null;
  let parityTessera = null;
  let input;
  if (a.ref) {
    // export_vit_onnx.py writes <onnx>.ref_input.npy and <onnx>.ref_logits.npy.
    const r = await check(a.ref.replace(/ref_logits\.npy$/, 'ref_input.npy'), a.ref, 'PyTorch');
    dims = r.input.shape;
    input = r.input.data;
    parity = r.diff;
  } else {
    const meta = session.inputMetadata && session.inputMetadata[0];
    if (meta && Array.isArray(meta.shape) && meta.shape.every((d) => typeof d === 'number')) {
      dims = meta.shape;
    }
    input = syntheticInput(dims.reduce((p, d) => p * d, 1));
  }
  if (a.checkTessera) {
    // export_vit_onnx.py parity writes <onnx>.tessera_input.npy and .tessera_logits.npy.
    parityTessera = (await check(a.checkTessera.replace(/tessera_logits\.npy$/, 'tessera_input.npy'),
                                 a.checkTessera, 'Tessera')).diff;
  }

  const feeds = { [inName]: new ort.Tensor('float32', input, dims) };
  for (let i = 0; i < a.warmup; i++) await session.run(feeds);
  if (a.serve) {
    const facts = { batch: dims[0], threads: a.threads, engine: 'onnxruntime' };
    if (parity) facts.parity = parity;
    if (parityTessera) facts.parity_tessera = parityTessera;
    process.stdout.write(JSON.stringify(facts) + '\n');
    const lines = require('readline').createInterface({ input: process.stdin });
    for await (const line of lines) {
      const f = line.trim().split(/\s+/).map(Number);
      if (!line.trim()) continue;
      if (f.length !== 2 || !Number.isInteger(f[0]) || !Number.isInteger(f[1]) || f[0] < 0 || f[1] < 1) {
        throw new Error(`--serve: expected "W N" (untimed and timed runs), got '${line}'`);
      }
      for (let i = 0; i < f[0]; i++) await session.run(feeds);
      const ms = [];
      for (let i = 0; i < f[1]; i++) {
        const t0 = process.hrtime.bigint();
        await session.run(feeds);
        ms.push(Number(process.hrtime.bigint() - t0) / 1e6);
      }
      process.stdout.write(JSON.stringify({ ms }) + '\n');
    }
    if (session.release) await session.release();
    return;
  }
  const times = [];
  for (let i = 0; i < a.iters; i++) {
    const t0 = process.hrtime.bigint();
    await session.run(feeds);
    times.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  times.sort((x, y) => x - y);
  const out = {
    ms_p50: percentile(times, 0.5), ms_p90: percentile(times, 0.9), ms_min: times[0],
    batch: dims[0], threads: a.threads, iters: a.iters, warmup: a.warmup,
    engine: 'onnxruntime', version: ort.env.versions ? ort.env.versions.node : undefined,
  };
  if (parity) out.parity = parity;
  if (parityTessera) out.parity_tessera = parityTessera;
  process.stdout.write(JSON.stringify(out) + '\n');
  if (session.release) await session.release();
}

main().catch((e) => {
  process.stderr.write(`ort_bench: ${e && e.message ? e.message : e}\n`);
  process.exit(1);
});
