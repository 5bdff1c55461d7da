// pgstash driver check: a realistic node-postgres (`pg`) workload, run the same
// against Postgres directly and through pgstash by tests/drivers/run. The npm
// package ships no test suite, so this program is ours. Each check prints
// "ok <name>" or "not ok <name> # <reason>"; the last line is "N passed, N failed".
// Connection settings come from PGHOST/PGPORT/PGUSER/PGDATABASE.
'use strict';
const assert = require('node:assert/strict');
const pg = require('pg');

const checks = [];
const CHECK_TIMEOUT_MS = 30000;

// Resolves as p does, or rejects after ms: a hang is a failure, not a stuck run.
function within(ms, p, what) {
  let timer;
  const t = new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(what)), ms); });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}
const check = (name, fn) => checks.push({ name, fn });

async function withClient(fn) {
  const c = new pg.Client();
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

check('simple_query', () => withClient(async (c) => {
  const r = await c.query("SELECT 1 + 1 AS two, 'x'::text AS x");
  assert.deepEqual(r.rows, [{ two: 2, x: 'x' }]);
}));

check('parameterized_query', () => withClient(async (c) => {
  const r = await c.query('SELECT $1::int * 3 AS v, $2::text AS s', [14, 'hé']);
  assert.deepEqual(r.rows, [{ v: 42, s: 'hé' }]);
}));

check('named_prepared_statement_reused', () => withClient(async (c) => {
  for (let i = 0; i < 30; i++) {
    const r = await c.query({ name: 'by_i', text: 'SELECT $1::int + 1 AS n', values: [i] });
    assert.equal(r.rows[0].n, i + 1);
  }
}));

check('many_named_statements_interleaved', () => withClient(async (c) => {
  for (let round = 0; round < 5; round++) {
    for (let k = 0; k < 8; k++) {
      const r = await c.query({ name: `s${k}`, text: `SELECT $1::int + ${k} AS n`, values: [round] });
      assert.equal(r.rows[0].n, round + k);
    }
  }
}));

check('pipelined_queries', () => withClient(async (c) => {
  const ps = [];
  for (let i = 0; i < 200; i++) ps.push(c.query('SELECT $1::int AS i', [i]));
  const rs = await Promise.all(ps);
  rs.forEach((r, i) => assert.equal(r.rows[0].i, i));
}));

check('types_roundtrip', () => withClient(async (c) => {
  const r = await c.query(
    `SELECT $1::jsonb AS j, $2::int[] AS a, $3::timestamptz AS t, $4::bytea AS b,
            $5::numeric AS n, $6::int8 AS big, NULL::text AS nul, true AS yes`,
    [{ k: [1, 'two'] }, [1, 2, 3], new Date('2024-02-29T12:34:56.789Z'), Buffer.from([0, 1, 255]),
     '12345678901234567890.0123456789', '9007199254740993']);
  const row = r.rows[0];
  assert.deepEqual(row.j, { k: [1, 'two'] });
  assert.deepEqual(row.a, [1, 2, 3]);
  assert.equal(row.t.toISOString(), '2024-02-29T12:34:56.789Z');
  assert.deepEqual([...row.b], [0, 1, 255]);
  assert.equal(row.n, '12345678901234567890.0123456789');
  assert.equal(row.big, '9007199254740993');
  assert.equal(row.nul, null);
  assert.equal(row.yes, true);
}));

check('array_row_mode_and_fields', () => withClient(async (c) => {
  const r = await c.query({ text: 'SELECT 1 AS a, 2 AS b', rowMode: 'array' });
  assert.deepEqual(r.rows, [[1, 2]]);
  assert.deepEqual(r.fields.map((f) => f.name), ['a', 'b']);
}));

check('large_result', () => withClient(async (c) => {
  const r = await c.query('SELECT g, repeat($1, 20) AS pad FROM generate_series(1, 20000) g', ['x']);
  assert.equal(r.rowCount, 20000);
  assert.equal(r.rows[19999].g, 20000);
}));

check('multi_statement_simple_query', () => withClient(async (c) => {
  const rs = await c.query('CREATE TEMP TABLE IF NOT EXISTS ms (v int); SELECT 1 AS one; SELECT 2 AS two');
  assert.equal(rs.length, 3);
  assert.equal(rs[2].rows[0].two, 2);
}));

check('transaction_commit_rollback', () => withClient(async (c) => {
  await c.query('DROP TABLE IF EXISTS node_items; CREATE TABLE node_items (id serial PRIMARY KEY, name text UNIQUE)');
  await c.query('BEGIN');
  await c.query("INSERT INTO node_items (name) VALUES ('kept')");
  await c.query('COMMIT');
  await c.query('BEGIN');
  await c.query("INSERT INTO node_items (name) VALUES ('undone')");
  await c.query('ROLLBACK');
  const r = await c.query("SELECT array_agg(name ORDER BY name) AS names FROM node_items");
  assert.deepEqual(r.rows[0].names, ['kept']);
}));

check('error_code_and_recovery', () => withClient(async (c) => {
  await c.query('CREATE TABLE IF NOT EXISTS node_uniq (name text UNIQUE)');
  await c.query("INSERT INTO node_uniq VALUES ('dup') ON CONFLICT DO NOTHING");
  await assert.rejects(c.query("INSERT INTO node_uniq VALUES ('dup')"), (e) => e.code === '23505');
  await c.query('BEGIN');
  await assert.rejects(c.query('SELECT 1/0'), (e) => e.code === '22012');
  await assert.rejects(c.query('SELECT 1'), (e) => e.code === '25P02');
  await c.query('ROLLBACK');
  assert.equal((await c.query('SELECT 7 AS v')).rows[0].v, 7);
}));

check('pool_concurrency', async () => {
  const pool = new pg.Pool({ max: 10 });
  try {
    const ps = [];
    for (let i = 0; i < 300; i++) ps.push(pool.query('SELECT $1::int * 2 AS v', [i]));
    const rs = await Promise.all(ps);
    rs.forEach((r, i) => assert.equal(r.rows[0].v, i * 2));
    const c = await pool.connect();
    try {
      await c.query('BEGIN');
      await c.query("SELECT set_config('app.user', 'alice', true)");
      const r = await c.query("SELECT current_setting('app.user') AS u");
      assert.equal(r.rows[0].u, 'alice');
      await c.query('COMMIT');
    } finally {
      c.release();
    }
  } finally {
    await pool.end();
  }
});

check('statement_timeout_local', () => withClient(async (c) => {
  await c.query('BEGIN');
  await c.query("SET LOCAL statement_timeout = '200ms'");
  await assert.rejects(c.query('SELECT pg_sleep(5)'), (e) => e.code === '57014');
  await c.query('ROLLBACK');
}));

check('reprepare_after_column_type_change', () => withClient(async (c) => {
  await c.query('DROP TABLE IF EXISTS node_retype; CREATE TABLE node_retype (v int); INSERT INTO node_retype VALUES (1)');
  const q = { name: 'retype', text: 'SELECT * FROM node_retype' };
  assert.equal((await c.query(q)).rows[0].v, 1);
  await c.query('ALTER TABLE node_retype ALTER COLUMN v TYPE text');
  // node-postgres does not re-prepare: Postgres answers 0A000.
  await assert.rejects(c.query(q), (e) => e.code === '0A000');
  assert.equal((await c.query('SELECT v FROM node_retype')).rows[0].v, '1');
}));

check('backend_pid_matches_server', () => withClient(async (c) => {
  const r = await c.query('SELECT pg_backend_pid() AS pid');
  assert.equal(r.rows[0].pid, c.processID);
}));

check('terminate_backend_by_pid', async () => {
  const victim = new pg.Client();
  await victim.connect();
  victim.on('error', () => {});
  const ended = new Promise((resolve) => victim.on('end', resolve));
  try {
    await withClient(async (c) => {
      const r = await c.query('SELECT pg_terminate_backend($1) AS ok', [victim.processID]);
      assert.equal(r.rows[0].ok, true);
    });
    await within(3000, ended, 'victim still connected');
  } finally {
    victim.end().catch(() => {});
  }
});

check('listen_notify', () => withClient(async (l) => {
  await l.query('LISTEN node_chan');
  const got = new Promise((resolve) => l.on('notification', resolve));
  await withClient((n) => n.query("NOTIFY node_chan, 'hello'"));
  const msg = await within(3000, got, 'no notification');
  assert.equal(msg.payload, 'hello');
}));

check('session_setting_persists', () => withClient(async (c) => {
  await c.query("SET application_name = 'node-check'");
  const r = await c.query('SHOW application_name');
  assert.equal(r.rows[0].application_name, 'node-check');
}));

(async () => {
  let passed = 0;
  let failed = 0;
  for (const { name, fn } of checks) {
    try {
      await within(CHECK_TIMEOUT_MS, fn(), `no answer in ${CHECK_TIMEOUT_MS} ms`);
      passed++;
      console.log(`ok ${name}`);
    } catch (e) {
      failed++;
      console.log(`not ok ${name} # ${String(e && e.message).replace(/\n/g, ' ')}`);
    }
  }
  console.log(`${passed} passed, ${failed} failed`);
  // a check that timed out may leave a connection open
  process.exit(0);
})();
