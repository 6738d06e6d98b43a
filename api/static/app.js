/* citywatch dashboard: no framework, no CDN; charts by the vendored uPlot (MIT).
 * The token is kept in sessionStorage (this tab only) and sent as `Authorization: Bearer`;
 * the live alert stream is read with fetch() streaming (EventSource cannot send headers),
 * so the token never appears in a URL. */

// An HJ 212 data flag other than N/S (F stopped, M maintenance, D fault, C calibration, T above
// range, B comms fault) marks a value that rules and compliance do not judge.
const flagMark = (r, f) => { const fl = (r.flags || {})[f]; return fl && fl !== 'N' && fl !== 'S' ? ` [${fl}]` : ''; };
(() => {
  'use strict';

  const I18N = {
    zh: {
      title: '城市管理监测平台', live_on: '实时连接正常', live_off: '实时连接断开', logout: '退出',
      token_label: '访问令牌', login: '进入', token_hint: '令牌仅保存在本标签页会话中（sessionStorage），关闭标签页即清除。',
      bad_token: '令牌无效或已失效，请重新输入。', alerts: '告警', show_resolved: '显示已恢复',
      col_time: '开始时间', col_severity: '级别', col_state: '状态', col_site: '工地/站点', col_device: '设备',
      col_message: '内容', col_ack: '确认', no_alerts: '当前没有告警', ack: '确认', acked_by: '已确认',
      sites: '工地与站点', st_ok: '正常', st_warn: '预警', st_alarm: '告警', st_stale: '离线/无数据',
      charts: '工地曲线', site: '工地', range: '时段', pm10_title: 'PM10（µg/m³，设定值 150）',
      noise_title: '噪声 LAeq（dB(A)，昼间限值 70 / 夜间限值 55）', compliance: '六个百分百 合规', date: '日期',
      csv: '导出 CSV', footer: '时间均为北京时间（Asia/Shanghai）', no_data: '无数据', all_pass: '全部达标',
      limit_150: '设定值 150', day_70: '昼间 70', night_55: '夜间 55', pm10: 'PM10', noise: '噪声',
      severity: {info: '提示', warning: '一般', major: '严重', critical: '紧急'},
      state: {pending: '待定', firing: '告警中', resolved: '已恢复'},
      kind: {dust: '扬尘', heating: '换热站', water: '水厂'}, role: {viewer: '查看', operator: '值班员', admin: '管理员'},
      last_seen: '最新数据', time: '时间', districts: '区县',
      xlsx: '导出 Excel', view_day: '日报', view_month: '月报', month: '月份', district: '区县',
      no_evidence: '无证据', not_equipped: '无法监测', days_pass: '达标天数',
      flagged: '标记数据（不参与判定）', flag_note: '数据标记', flag_hint: '空心橙色点，不连入曲线，规则与合规不计',
      flag: {F: '停运', M: '维护', S: '手工输入', D: '故障', C: '校准', T: '超测定上限', B: '通讯异常'},
      item: {hoarding: '周边围挡', cover: '物料覆盖', wash: '车辆冲洗', hardened: '路面硬化',
        wet_operation: '湿法作业', muck_covered: '渣土密闭', monitoring: '在线监测'},
    },
    en: {
      title: 'City monitoring', live_on: 'live', live_off: 'live stream down', logout: 'Log out',
      token_label: 'Access token', login: 'Enter', token_hint: 'The token is kept for this tab only (sessionStorage).',
      bad_token: 'The token is invalid; please enter it again.', alerts: 'Alerts', show_resolved: 'show resolved',
      col_time: 'Started', col_severity: 'Severity', col_state: 'State', col_site: 'Site', col_device: 'Device',
      col_message: 'Message', col_ack: 'Ack', no_alerts: 'No alerts', ack: 'Acknowledge', acked_by: 'acked',
      sites: 'Sites and stations', st_ok: 'normal', st_warn: 'warning', st_alarm: 'alarm', st_stale: 'offline / no data',
      charts: 'Site charts', site: 'Site', range: 'Range', pm10_title: 'PM10 (µg/m³, set value 150)',
      noise_title: 'Noise LAeq (dB(A), day limit 70 / night 55)', compliance: 'Six 100% compliance', date: 'Date',
      csv: 'Export CSV', footer: 'Times are Beijing time (Asia/Shanghai)', no_data: 'no data', all_pass: 'all pass',
      limit_150: 'set value 150', day_70: 'day 70', night_55: 'night 55', pm10: 'PM10', noise: 'noise',
      severity: {info: 'info', warning: 'warning', major: 'major', critical: 'critical'},
      state: {pending: 'pending', firing: 'firing', resolved: 'resolved'},
      kind: {dust: 'dust', heating: 'substation', water: 'water plant'}, role: {viewer: 'viewer', operator: 'operator', admin: 'admin'},
      last_seen: 'latest', time: 'time', districts: 'districts',
      xlsx: 'Export Excel', view_day: 'Day', view_month: 'Month', month: 'Month', district: 'District',
      no_evidence: 'no evidence', not_equipped: 'not measurable', days_pass: 'days all pass',
      flagged: 'flagged (not judged)', flag_note: 'Data flags', flag_hint: 'hollow orange points, left out of the line; rules and compliance skip them',
      flag: {F: 'stopped', M: 'maintenance', S: 'manual', D: 'fault', C: 'calibration', T: 'above range', B: 'comms fault'},
      item: {hoarding: 'Hoarding', cover: 'Cover', wash: 'Wash', hardened: 'Hardened',
        wet_operation: 'Wet operation', muck_covered: 'Muck enclosed', monitoring: 'Monitoring'},
    },
  };
  const ITEMS = ['hoarding', 'cover', 'wash', 'hardened', 'wet_operation', 'muck_covered', 'monitoring'];
  const STALE_MS = 10 * 60 * 1000;
  const FLAG_COLOR = '#e65100';

  let lang = localStorage.getItem('cw.lang') === 'en' ? 'en' : 'zh';
  let token = sessionStorage.getItem('cw.token');
  let me = null;
  let tz = 'Asia/Shanghai';
  const alerts = new Map();
  let latest = [];
  let compliance = null;
  let streamCtrl = null;
  let timers = [];
  const charts = {};

  const $ = (s) => document.querySelector(s);
  const t = (k) => (I18N[lang][k] ?? I18N.zh[k] ?? k);
  const tt = (group, k) => ((I18N[lang][group] || {})[k] ?? k);
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  function el(tag, attrs = {}, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === 'class') e.className = v; else if (k === 'text') e.textContent = v;
      else if (k.startsWith('data-')) e.setAttribute(k, v); else e[k] = v;
    }
    for (const c of children) if (c != null) e.append(c);
    return e;
  }
  function fmtTime(v) {
    if (v == null) return '';
    const d = typeof v === 'number' ? new Date(v) : new Date(v);
    return new Intl.DateTimeFormat(lang === 'zh' ? 'zh-CN' : 'en-GB', {
      timeZone: tz, month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false,
    }).format(d);
  }
  function fmtAxis(ms) {
    const p = Object.fromEntries(new Intl.DateTimeFormat('en-GB', {timeZone: tz, month: '2-digit', day: '2-digit',
      hour: '2-digit', minute: '2-digit', hour12: false}).formatToParts(new Date(ms)).map((x) => [x.type, x.value]));
    return p.hour === '00' && p.minute === '00' ? `${p.month}-${p.day}` : `${p.hour}:${p.minute}`;
  }
  function todayLocal() { return new Intl.DateTimeFormat('en-CA', {timeZone: tz}).format(new Date()); }

  // ---------------------------------------------------------------- HTTP
  async function api(path, opts = {}) {
    const headers = Object.assign({Authorization: 'Bearer ' + token}, opts.headers || {});
    const r = await fetch(path, Object.assign({}, opts, {headers}));
    if (r.status === 401) { logout(t('bad_token')); throw new Error('unauthorized'); }
    return r;
  }
  async function getJSON(path) {
    const r = await api(path);
    if (!r.ok) throw new Error(path + ': ' + r.status);
    return r.json();
  }
  // A panel's answers may come back out of order (the user picks another site or date
  // while the first request is in flight, or a timer fires meanwhile): only the answer to
  // the newest request of each panel is shown.
  const asked = {};
  async function newestOnly(panel, request) {
    const ticket = asked[panel] = (asked[panel] || 0) + 1;
    const answer = await request();
    return ticket === asked[panel] ? answer : null;
  }

  // ---------------------------------------------------------------- language
  function applyLang() {
    document.documentElement.lang = lang === 'zh' ? 'zh-CN' : 'en';
    document.title = t('title') + ' citywatch';
    document.querySelectorAll('[data-i18n]').forEach((e) => { e.textContent = t(e.dataset.i18n); });
    $('#lang').textContent = lang === 'zh' ? 'English' : '中文';
    setLive(streamCtrl !== null && $('#live').classList.contains('on'));
    if (me) {
      $('#who').textContent = `${me.name} · ${tt('role', me.role)}`;
      // a token limited to districts: the API answers for their sites only; say which
      $('#districts').hidden = !me.districts;
      $('#districts').textContent = me.districts ? `${t('districts')}: ${me.districts.join(lang === 'zh' ? '、' : ', ')}` : '';
      renderAlerts(); renderSites(); renderCompliance(); renderComplianceMonth(); drawCharts();
    }
  }
  function setLive(on) {
    const p = $('#live');
    p.classList.toggle('on', on); p.classList.toggle('off', !on);
    p.textContent = t(on ? 'live_on' : 'live_off');
  }

  // ---------------------------------------------------------------- alerts
  // A resync's snapshot may be read by the server before a live event that reaches us
  // first; applied as is, it would wipe that alert (or undo its ack) from the table.
  // The stream is subscribed before the snapshot is asked for, so every change after the
  // request is also among the live events: re-applying those, in order, over the
  // snapshot gives the newest state whichever way the race went.
  const resyncs = new Set();
  let resynced = 0;
  async function loadAlerts() {
    const since = [];
    resyncs.add(since);
    try {
      const page = await getJSON('/v1/alerts?limit=200');
      alerts.clear();
      for (const a of page.items) alerts.set(a.id, a);
      for (const a of since) alerts.set(a.id, a);
    } finally { resyncs.delete(since); }
    $('#alerts').dataset.resynced = String(++resynced);
    renderAlerts(); renderSites();
  }
  const RANK = {firing: 0, pending: 1, resolved: 2};
  function renderAlerts() {
    const body = $('#alerts tbody');
    body.replaceChildren();
    const showResolved = $('#show-resolved').checked;
    const list = [...alerts.values()].filter((a) => showResolved || a.state !== 'resolved')
      .sort((a, b) => (RANK[a.state] - RANK[b.state]) || String(b.started_at).localeCompare(String(a.started_at)));
    const canAck = me && (me.role === 'operator' || me.role === 'admin');
    for (const a of list) {
      let ackCell;
      if (a.acked) ackCell = el('span', {class: 'acked', text: `✓ ${t('acked_by')} ${a.acked_by || ''}`});
      else if (canAck) {
        const b = el('button', {type: 'button', class: 'ack', 'data-id': a.id, text: t('ack')});
        b.addEventListener('click', () => ack(a.id, b));
        ackCell = b;
      }
      body.append(el('tr', {class: `sev-${a.severity} ${a.state}`, 'data-id': a.id, 'data-state': a.state},
        el('td', {text: fmtTime(a.started_at)}),
        el('td', {}, el('span', {class: `badge ${a.severity}`, text: tt('severity', a.severity)})),
        el('td', {}, el('span', {class: `badge ${a.state}`, text: tt('state', a.state)})),
        el('td', {text: a.site}), el('td', {text: a.device}),
        el('td', {class: 'msg', text: lang === 'zh' ? a.message : (a.message_en || a.message)}),
        el('td', {}, ackCell)));
    }
    $('#alerts-empty').hidden = list.length > 0;
  }
  async function ack(id, button) {
    button.disabled = true;
    try {
      const r = await api(`/v1/alerts/${encodeURIComponent(id)}/ack`, {
        method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify({note: ''}),
      });
      if (r.ok) { const a = await r.json(); alerts.set(a.id, a); renderAlerts(); renderSites(); }
      else button.disabled = false;
    } catch (e) { button.disabled = false; }
  }
  function handleEvent(block) {
    let event = 'message'; const data = [];
    for (const line of block.split('\n')) {
      if (line.startsWith(':')) continue;
      if (line.startsWith('event:')) event = line.slice(6).trim();
      else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
    }
    if (event !== 'alert' || !data.length) return;
    const n = JSON.parse(data.join('\n'));
    alerts.set(n.alert.id, n.alert);
    for (const since of resyncs) since.push(n.alert);
    renderAlerts(); renderSites();
  }
  async function stream() {
    while (token) {
      const ctrl = new AbortController();
      streamCtrl = ctrl;
      try {
        const r = await api('/v1/alerts/stream', {signal: ctrl.signal, headers: {Accept: 'text/event-stream'}});
        if (!r.ok || !r.body) throw new Error('stream ' + r.status);
        setLive(true);
        loadAlerts().catch(() => {});  // resync: the stream is live-only
        const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = '';
        for (;;) {
          const {value, done} = await reader.read();
          if (done) break;
          buf += value.replace(/\r\n/g, '\n');
          let i;
          while ((i = buf.indexOf('\n\n')) >= 0) { handleEvent(buf.slice(0, i)); buf = buf.slice(i + 2); }
        }
      } catch (e) { /* reconnect below */ }
      setLive(false);
      if (!token || ctrl.signal.aborted) return;
      await sleep(3000);
    }
  }

  // ---------------------------------------------------------------- sites
  async function loadLatest() {
    const answer = await newestOnly('latest', () => getJSON('/v1/readings/latest'));
    if (!answer) return;
    latest = answer.items;
    renderSites(); fillSiteSelect();
  }
  function siteStatus(site, newestMs) {
    let s = Date.now() - newestMs > STALE_MS ? 'stale' : 'ok';
    for (const a of alerts.values()) {
      if (a.site !== site || a.state === 'resolved') continue;
      if (a.state === 'firing' && (a.severity === 'major' || a.severity === 'critical')) return 'alarm';
      s = 'warn';
    }
    return s;
  }
  const SHOW = {dust: ['pm10', 'pm25', 'noise'], heating: ['secondary_supply_temp', 'secondary_return_pressure'],
    water: ['turbidity', 'free_chlorine']};
  function renderSites() {
    const box = $('#sites');
    box.replaceChildren();
    const bySite = new Map();
    for (const r of latest) { if (!bySite.has(r.site)) bySite.set(r.site, []); bySite.get(r.site).push(r); }
    for (const a of alerts.values()) if (!bySite.has(a.site)) bySite.set(a.site, []);
    for (const [site, rows] of [...bySite.entries()].sort()) {
      const newest = Math.max(0, ...rows.map((r) => r.ts_ms));
      const st = siteStatus(site, newest);
      const vals = rows.map((r) => `${r.device} ${tt('kind', r.kind)}: ` + (SHOW[r.kind] || Object.keys(r.values).slice(0, 2))
        .filter((f) => r.values[f] != null).map((f) => `${f} ${Number(r.values[f]).toFixed(1)}${flagMark(r, f)}`).join(' · '));
      const card = el('div', {class: `card ${st}`, 'data-site': site, 'data-status': st, title: t('st_' + st)},
        el('div', {class: 'name', text: `${site} · ${t('st_' + st)}`}),
        ...vals.map((v) => el('div', {class: 'vals', text: v})),
        el('div', {class: 'vals', text: newest ? `${t('last_seen')} ${fmtTime(newest)}` : t('no_data')}));
      card.addEventListener('click', () => { const s = $('#chart-site'); if ([...s.options].some((o) => o.value === site)) { s.value = site; loadCharts(); } });
      box.append(card);
    }
  }
  function fillSiteSelect() {
    const s = $('#chart-site');
    const sites = [...new Set(latest.filter((r) => r.kind === 'dust').map((r) => r.site))].sort();
    const keep = s.value;
    s.replaceChildren(...sites.map((x) => el('option', {value: x, text: x})));
    if (sites.includes(keep)) s.value = keep;
    if (!charts.loadedFor || charts.loadedFor !== s.value) loadCharts();
  }

  // ---------------------------------------------------------------- charts
  async function loadCharts() {
    const site = $('#chart-site').value;
    if (!site) return;
    charts.loadedFor = site;
    const newest = Math.max(0, ...latest.filter((r) => r.site === site).map((r) => r.ts_ms));
    const end = Math.min(Date.now(), newest + 60000);
    const start = end - Number($('#chart-hours').value) * 3600 * 1000;
    const q = (field) => `/v1/series?kind=dust&site=${encodeURIComponent(site)}&field=${field}&agg=mean` +
      `&start=${encodeURIComponent(new Date(start).toISOString())}&end=${encodeURIComponent(new Date(end).toISOString())}`;
    const both = await newestOnly('charts', () => Promise.all([getJSON(q('pm10')), getJSON(q('noise'))]));
    if (!both) return;
    const [pm, noise] = both;
    const one = (doc) => ({points: doc.series[0]?.points || [], flags: doc.series[0]?.flags || []});
    charts.data = {pm10: one(pm), noise: one(noise)};
    $('#charts-panel').dataset.site = site;
    drawCharts();
  }
  function drawCharts() {
    if (!charts.data || typeof uPlot === 'undefined') return;
    draw('pm10', charts.data.pm10, [[150, t('limit_150'), '#d93025']], '#1565c0', t('pm10'));
    draw('noise', charts.data.noise, [[70, t('day_70'), '#d93025'], [55, t('night_55'), '#7b1fa2']], '#2e7d32', t('noise'));
  }
  // A bucket holding a value the monitor flagged (HJ 212 F/M/D/C/T/B; the API's `flags`) is
  // left out of the line and drawn as a hollow orange point of its own series, whose legend
  // (the hover read-out) names the flag: a fault or calibration value must not read as a
  // real dust peak, yet must stay visible, since it is what the monitor sent.
  const flagText = (f) => `${f} ${tt('flag', f)}`;
  function draw(name, s, limits, color, label) {
    const box = $('#chart-' + name);
    if (charts[name]) { charts[name].destroy(); charts[name] = null; }
    box.replaceChildren();
    const {points, flags} = s;
    if (!points.length) { box.append(el('p', {class: 'hint', text: t('no_data')})); return; }
    const flagAt = new Map(flags);
    const xs = points.map((p) => p[0]);
    const fl = xs.map((x) => flagAt.get(x) ?? null);
    const data = [xs, points.map((p, i) => (fl[i] ? null : p[1])), points.map((p, i) => (fl[i] ? p[1] : null)),
      ...limits.map(([v]) => xs.map(() => v))];
    const num = (v) => (v == null ? '--' : Number(v).toFixed(1));
    const opts = {
      width: Math.max(300, box.clientWidth || 500), height: 220, ms: 1,
      tzDate: (ts) => uPlot.tzDate(new Date(ts), tz),
      series: [{label: t('time'), value: (u, v) => (v == null ? '--' : fmtTime(v))},
        {label, stroke: color, width: 1.5, value: (u, v) => num(v)},
        {label: t('flagged'), stroke: FLAG_COLOR, width: 0, paths: () => null,
          points: {show: true, size: 8, width: 2, stroke: FLAG_COLOR, fill: '#fff'},
          value: (u, v, si, i) => (v == null ? '--' : `${num(v)} · ${flagText(fl[i])}`)},
        ...limits.map(([, l, c]) => ({label: l, stroke: c, dash: [6, 4], width: 1, points: {show: false}}))],
      axes: [{values: (u, splits) => splits.map((v) => fmtAxis(v))}, {size: 50}],
    };
    charts[name] = new uPlot(opts, data, box);
    const n = fl.filter(Boolean).length;
    box.dataset.flagged = String(n);
    if (n) {
      const count = {};
      for (const f of fl) if (f) count[f] = (count[f] || 0) + 1;
      const parts = Object.entries(count).sort().map(([f, c]) => `${flagText(f)} ×${c}`);
      box.append(el('p', {class: 'flag-note', 'data-flags': Object.keys(count).sort().join(''),
        text: `${t('flag_note')}：${parts.join(lang === 'zh' ? '，' : ', ')}（${t('flag_hint')}）`}));
    }
  }

  // ---------------------------------------------------------------- compliance
  // Day view: one row per site, one cell per item; the reason of every fail and no_evidence
  // is the cell's title (hover). Month view: one row per site, one cell per day.
  let complianceMonth = null;
  let compView = 'day';
  const itemName = (k) => tt('item', k);
  const reasonOf = (i) => (lang === 'zh' ? (i.detail_zh || i.detail) : (i.detail || i.detail_zh));
  async function loadCompliance() {
    if (compView === 'month') return loadComplianceMonth();
    const d = $('#comp-date').value || todayLocal();
    const answer = await newestOnly('compliance', () => getJSON(`/v1/compliance/six100?date=${encodeURIComponent(d)}`));
    if (!answer) return;
    compliance = answer;
    $('#compliance').dataset.date = answer.date;
    renderCompliance();
  }
  async function loadComplianceMonth() {
    const m = $('#comp-month').value || todayLocal().slice(0, 7);
    const answer = await newestOnly('compliance-month',
      () => getJSON(`/v1/compliance/six100/month?month=${encodeURIComponent(m)}`));
    if (!answer) return;
    complianceMonth = answer;
    $('#compliance-month').dataset.month = answer.month;
    renderComplianceMonth();
  }
  function itemCell(i) {
    if (!i) return el('td', {});
    let txt;
    if (i.status === 'no_evidence') txt = i.measurable === false ? t('not_equipped') : t('no_evidence');
    else txt = `${i.percent == null ? '' : i.percent.toFixed(1) + '% '}${i.status === 'pass' ? '✓' : '✗'}`;
    const cls = i.status === 'no_evidence' && i.measurable === false ? 'no_evidence not_equipped' : i.status;
    const attrs = {class: cls, text: txt, 'data-item': i.item, 'data-status': i.status};
    if (i.status !== 'pass') attrs.title = reasonOf(i);  // hover: why it failed or has no evidence
    return el('td', attrs);
  }
  function renderCompliance() {
    if (!compliance) return;
    const head = $('#compliance thead'); const body = $('#compliance tbody');
    head.replaceChildren(el('tr', {}, el('th', {text: t('district')}), el('th', {text: t('site')}),
      ...ITEMS.map((k) => el('th', {text: itemName(k), 'data-item': k})), el('th', {text: t('all_pass')})));
    body.replaceChildren(...compliance.sites.map((s) => el('tr', {'data-site': s.site},
      el('td', {text: s.district || ''}), el('td', {text: s.site}),
      ...ITEMS.map((k) => itemCell(s.items.find((x) => x.item === k))),
      el('td', {class: s.all_pass == null ? 'no_data' : (s.all_pass ? 'pass' : 'fail'),
        text: s.all_pass == null ? t('no_data') : (s.all_pass ? '✓' : '✗')}))));
  }
  function renderComplianceMonth() {
    if (!complianceMonth) return;
    const days = complianceMonth.days;
    $('#compliance-month thead').replaceChildren(el('tr', {}, el('th', {text: t('district')}), el('th', {text: t('site')}),
      ...days.map((d) => el('th', {text: String(Number(d.slice(8))), title: d})), el('th', {text: t('days_pass')})));
    $('#compliance-month tbody').replaceChildren(...complianceMonth.sites.map((s) => {
      const byDay = Object.fromEntries(s.days.map((d) => [d.date, d]));
      return el('tr', {'data-site': s.site}, el('td', {text: s.district || ''}), el('td', {text: s.site}),
        ...days.map((d) => {
          const x = byDay[d];
          if (!x) return el('td', {class: 'no_data', text: '', title: d});
          const reasons = Object.entries(x.reasons || {}).map(([k, r]) => `${itemName(k)}：${r}`);
          const cls = x.all_pass == null ? 'no_data' : (x.all_pass ? 'pass' : (x.failed.length ? 'fail' : 'no_evidence'));
          const txt = x.all_pass ? '✓' : (x.failed.length ? '✗' : (x.all_pass == null ? '' : '?'));
          return el('td', {class: cls, text: txt, 'data-date': d, title: [d, ...reasons].join('\n')});
        }),
        el('td', {text: `${s.days_all_pass}/${s.days_judged}`}));
    }));
  }
  function setCompView(view) {
    compView = view;
    $('#comp-day-tools').hidden = view !== 'day'; $('#compliance').hidden = view !== 'day';
    $('#comp-month-tools').hidden = view !== 'month'; $('#compliance-month').hidden = view !== 'month';
    $('#comp-view-day').classList.toggle('active', view === 'day');
    $('#comp-view-month').classList.toggle('active', view === 'month');
    loadCompliance().catch(() => {});
  }
  async function download(path, name) {
    const r = await api(path);
    if (!r.ok) return;
    const url = URL.createObjectURL(await r.blob());
    const a = el('a', {href: url, download: name});
    document.body.append(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }
  async function downloadCsv() {
    const d = $('#comp-date').value || todayLocal();
    await download(`/v1/compliance/six100?date=${encodeURIComponent(d)}&format=csv`, `six100-${d}.csv`);
  }
  async function downloadXlsx() {
    const key = compView === 'month' ? ($('#comp-month').value || todayLocal().slice(0, 7))
      : ($('#comp-date').value || todayLocal());
    const q = compView === 'month' ? 'month' : 'date';
    await download(`/v1/compliance/six100.xlsx?${q}=${encodeURIComponent(key)}`, `六个百分百-${key}.xlsx`);
  }

  // ---------------------------------------------------------------- session
  function logout(message) {
    token = null; me = null;
    sessionStorage.removeItem('cw.token');
    if (streamCtrl) streamCtrl.abort();
    streamCtrl = null;
    timers.forEach(clearInterval); timers = [];
    $('#main').hidden = true; $('#logout').hidden = true; $('#login').hidden = false;
    $('#who').textContent = ''; $('#districts').hidden = true;
    $('#login-error').textContent = message || '';
    setLive(false);
  }
  async function start() {
    try { me = await getJSON('/v1/me'); } catch (e) { return; }
    tz = me.tz || tz;
    $('#login').hidden = true; $('#main').hidden = false; $('#logout').hidden = false;
    $('#comp-date').value = todayLocal();
    $('#comp-date').max = todayLocal();
    $('#comp-month').value = todayLocal().slice(0, 7);
    $('#comp-month').max = todayLocal().slice(0, 7);
    applyLang();
    stream();
    loadLatest().catch(() => {});
    loadCompliance().catch(() => {});
    timers.push(setInterval(() => loadLatest().catch(() => {}), 30000));
    timers.push(setInterval(() => loadCompliance().catch(() => {}), 300000));
  }

  document.addEventListener('DOMContentLoaded', () => {
    applyLang();
    $('#lang').addEventListener('click', () => { lang = lang === 'zh' ? 'en' : 'zh'; localStorage.setItem('cw.lang', lang); applyLang(); });
    $('#logout').addEventListener('click', () => logout(''));
    $('#login-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      token = $('#token').value.trim();
      $('#token').value = '';
      if (!token) return;
      sessionStorage.setItem('cw.token', token);
      start();
    });
    $('#show-resolved').addEventListener('change', renderAlerts);
    $('#chart-site').addEventListener('change', () => loadCharts().catch(() => {}));
    $('#chart-hours').addEventListener('change', () => loadCharts().catch(() => {}));
    $('#comp-date').addEventListener('change', () => loadCompliance().catch(() => {}));
    $('#comp-csv').addEventListener('click', () => downloadCsv().catch(() => {}));
    $('#comp-xlsx').addEventListener('click', () => downloadXlsx().catch(() => {}));
    $('#comp-month').addEventListener('change', () => loadCompliance().catch(() => {}));
    $('#comp-view-day').addEventListener('click', () => setCompView('day'));
    $('#comp-view-month').addEventListener('click', () => setCompView('month'));
    if (token) start(); else $('#login').hidden = false;
  });
})();
