// k6 load test of wms-serve (`make load-test`, tests/load/run.sh). Two scenarios, one after the
// other, against POST /predictions/{model} with one JPEG:
//   single - 1 virtual user: latency of single requests, the seed's targets (avg < 0.5 s, p95 < 1 s);
//   fifty  - the seed's `k6 run --vus 50 --duration 30s`: 50 users with no think time.
// Errors: every answer must be 200, except an explicit 503 backpressure answer that carries
// Retry-After (queue full, decode budget); anything else (5xx, 4xx, timeouts, resets) fails the run.
// Env: URL (inference base URL), MODEL (model name), PHOTO (path), SUMMARY (JSON output path),
// SINGLE_DURATION, FIFTY_DURATION, FIFTY_VUS (defaults below).
import http from 'k6/http';
import { check } from 'k6';
import { Rate, Counter } from 'k6/metrics';

const URL = __ENV.URL || 'http://127.0.0.1:8080';
const MODEL = __ENV.MODEL || 'model';
const PHOTO = open(__ENV.PHOTO, 'b');
const SINGLE = __ENV.SINGLE_DURATION || '20s';
const FIFTY = __ENV.FIFTY_DURATION || '30s';
const VUS = parseInt(__ENV.FIFTY_VUS || '50', 10);

// Share of answers that are neither 200 nor 503 + Retry-After.
const unexpected = new Rate('unexpected_answers');
const backpressure = new Counter('backpressure_503');

export const options = {
  scenarios: {
    single: { executor: 'constant-vus', vus: 1, duration: SINGLE, gracefulStop: '30s' },
    fifty: {
      executor: 'constant-vus', vus: VUS, duration: FIFTY,
      startTime: addSeconds(SINGLE, 2), gracefulStop: '60s',
    },
  },
  thresholds: {
    'unexpected_answers': ['rate==0'],
    // Both scenarios ran requests (sub-metrics exist only where a threshold names them).
    'http_reqs{scenario:single}': ['count>0'],
    'http_reqs{scenario:fifty}': ['count>0'],
    'unexpected_answers{scenario:single}': ['rate==0'],
    'unexpected_answers{scenario:fifty}': ['rate==0'],
    // The seed's latency targets, for single requests (1 VU).
    'http_req_duration{scenario:single}': ['avg<500', 'p(95)<1000'],
    // Recorded for the summary, no target: what 50 users queueing on 2 cores wait.
    'http_req_duration{scenario:fifty}': ['max>=0'],
  },
  // 503 with Retry-After is an expected answer under load: not an http_req_failed.
  // (Whether it carried Retry-After is checked below.)
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'],
};
http.setResponseCallback(http.expectedStatuses(200, 503));

function addSeconds(d, s) {
  const m = /^(\d+)s$/.exec(d);
  if (!m) throw new Error(`durations are whole seconds like 20s, got ${d}`);
  return `${parseInt(m[1], 10) + s}s`;
}

export default function () {
  const r = http.post(`${URL}/predictions/${MODEL}`, PHOTO, {
    headers: { 'Content-Type': 'image/jpeg' },
    timeout: '120s',
  });
  const ok = r.status === 200 && (r.headers['Content-Type'] || '').startsWith('image/png');
  const shed = r.status === 503 && !!r.headers['Retry-After'];
  if (shed) backpressure.add(1);
  unexpected.add(!(ok || shed));
  check(r, { '200 mask or 503 with Retry-After': () => ok || shed });
}

export function handleSummary(data) {
  const out = {};
  out[__ENV.SUMMARY || 'k6-summary.json'] = JSON.stringify(data, null, 2);
  const m = data.metrics;
  const line = (name) => {
    const v = m[name] && m[name].values;
    if (!v) return `${name}: none\n`;
    return `${name}: ` + Object.entries(v).map(([k, x]) => `${k}=${typeof x === 'number' ? x.toFixed(2) : x}`).join(' ') + '\n';
  };
  out.stdout = ['http_reqs', 'http_reqs{scenario:single}', 'http_reqs{scenario:fifty}',
    'http_req_duration{scenario:single}', 'http_req_duration{scenario:fifty}',
    'unexpected_answers', 'backpressure_503', 'http_req_failed']
    .map(line).join('') +
    Object.entries(m).filter(([, v]) => v.thresholds)
      .map(([k, v]) => Object.entries(v.thresholds).map(([t, r]) => `threshold ${k} ${t}: ${r.ok ? 'ok' : 'FAILED'}\n`).join('')).join('');
  return out;
}
