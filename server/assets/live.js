// The live venue dashboard. Vanilla JavaScript, no build step, no third-party code.
// Every piece of data is written with textContent or as an SVG attribute, never as HTML.
'use strict';

(function () {
  const TEXT = {
    zh: {
      title: '实时入馆', logout: '退出', expected: '应到', arrived: '已到', inside: '馆内',
      missing: '未到', arrivals: '到达时间（每10分钟）', bookings: '今日预约', ledger: '重复扫码',
      anomalies: '异常', pupil: '学生', school: '学校', scans: '扫码记录', time: '时间',
      kind: '类型', device: '设备', updated: '更新于', 'no-arrivals': '还没有人到达',
      'no-bookings': '今天没有预约', 'no-duplicates': '没有重复扫码', 'no-anomalies': '没有异常',
      connecting: '正在连接…', live: '实时', lost: '连接中断，正在重试…',
      counted: '计入', duplicate: '重复', capacity: '名额', party: '预约人数',
      'missing-list': '未到名单', 'all-here': '全部到齐', status: '状态', cumulative: '累计',
      bandOk: (n) => `全部 ${n} 台相关设备已同步，数字为实时数字。`,
      bandNone: '今天没有相关设备。',
      bandStale: (arrived, inside, n, min, max) =>
        `已到 ≥ ${arrived}，馆内 ≥ ${inside}：${n} 台设备已 ${min === max ? min : min + '–' + max} 分钟未同步`,
      minutesAgo: (m) => `${m} 分钟前`,
      role: { teacher: '教师', venue_staff: '场馆工作人员', pupil: '学生', volunteer: '志愿者', bureau_admin: '管理员', unknown: '未知' },
      statusName: { requested: '待确认', confirmed: '已确认', waitlisted: '候补', cancelled: '已取消' },
      kindName: { walk_in: '未预约入馆', cancelled_booking: '预约已取消', unconfirmed_booking: '预约未确认', outside_slot: '不在时段内' },
      method: { gate_code: '闸机码', pass_scan: '扫学生证', manual: '手动' },
      toggle: 'English',
    },
    en: {
      title: 'Live attendance', logout: 'Log out', expected: 'Expected', arrived: 'Arrived',
      inside: 'Inside', missing: 'Missing', arrivals: 'Arrivals (per 10 min)', bookings: "Today's bookings",
      ledger: 'Duplicate scans', anomalies: 'Anomalies', pupil: 'Pupil', school: 'School',
      scans: 'Scans', time: 'Time', kind: 'Kind', device: 'Device', updated: 'Updated',
      'no-arrivals': 'Nobody has arrived yet', 'no-bookings': 'No bookings today',
      'no-duplicates': 'No duplicate scans', 'no-anomalies': 'No anomalies',
      connecting: 'Connecting…', live: 'Live', lost: 'Connection lost, retrying…',
      counted: 'counted', duplicate: 'duplicate', capacity: 'places', party: 'booked',
      'missing-list': 'Not arrived', 'all-here': 'Everyone is here', status: 'Status', cumulative: 'total',
      bandOk: (n) => `All ${n} relevant devices have synced; the numbers are live.`,
      bandNone: 'No devices relevant to today.',
      bandStale: (arrived, inside, n, min, max) =>
        `≥ ${arrived} arrived, ≥ ${inside} inside: ${n} device${n === 1 ? '' : 's'} not synced for ${min === max ? min : min + '–' + max} min`,
      minutesAgo: (m) => `${m} min ago`,
      role: { teacher: 'teacher', venue_staff: 'venue staff', pupil: 'pupil', volunteer: 'volunteer', bureau_admin: 'admin', unknown: 'unknown' },
      statusName: { requested: 'requested', confirmed: 'confirmed', waitlisted: 'wait-listed', cancelled: 'cancelled' },
      kindName: { walk_in: 'walk-in', cancelled_booking: 'cancelled booking', unconfirmed_booking: 'unconfirmed booking', outside_slot: 'outside the slot' },
      method: { gate_code: 'gate code', pass_scan: 'pass scan', manual: 'manual' },
      toggle: '中文',
    },
  };

  const params = new URLSearchParams(window.location.search);
  const match = window.location.pathname.match(/^\/venues\/([0-9a-fA-F-]{36})\/live\/?$/);
  const venue = match ? match[1] : '';
  const day = params.get('day') || '';
  let lang = params.get('lang');
  if (lang !== 'zh' && lang !== 'en') {
    lang = (navigator.language || '').toLowerCase().startsWith('zh') ? 'zh' : 'en';
  }
  let last = null;
  let connState = 'connecting';

  const $ = (id) => document.getElementById(id);
  const t = (key) => TEXT[lang][key];

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function clock(ms, offsetMinutes, withSeconds) {
    const d = new Date(ms + offsetMinutes * 60000);
    const p = (n) => String(n).padStart(2, '0');
    const hm = `${p(d.getUTCHours())}:${p(d.getUTCMinutes())}`;
    return withSeconds ? `${hm}:${p(d.getUTCSeconds())}` : hm;
  }

  function deviceText(d) {
    return `${t('role')[d.role] || d.role} · ${d.short_id}`;
  }

  function applyLanguage() {
    document.documentElement.lang = lang === 'zh' ? 'zh-CN' : 'en';
    for (const node of document.querySelectorAll('[data-i18n]')) {
      const v = t(node.getAttribute('data-i18n'));
      if (typeof v === 'string') node.textContent = v;
    }
    const other = lang === 'zh' ? 'en' : 'zh';
    const toggle = $('lang');
    toggle.textContent = t('toggle');
    toggle.lang = other === 'zh' ? 'zh-CN' : 'en';
    toggle.hreflang = toggle.lang;
    const to = new URL(window.location.href);
    to.searchParams.set('lang', other);
    toggle.href = to.search;
    document.title = `${t('title')}${last ? ' · ' + last.venue_name : ''}`;
    showConnection(connState);
    if (last) render(last);
  }

  function showConnection(state) {
    connState = state;
    const c = $('conn');
    c.dataset.state = state;
    c.textContent = t(state);
    document.body.dataset.connection = state;
  }

  function setTotal(name, value, bounded) {
    $(`total-${name}`).textContent = String(value);
    $(`bound-${name}`).textContent = bounded ? '≥ ' : '';
  }

  function renderBand(s) {
    const b = s.band;
    const box = $('band');
    const list = $('band-devices');
    clear(list);
    if (b.counts_are_lower_bounds) {
      box.dataset.state = 'stale';
      $('band-headline').textContent = t('bandStale')(
        s.totals.arrived, s.totals.inside, b.stale.length, b.min_minutes, b.max_minutes);
      for (const d of b.stale) {
        const li = el('li', 'stale-device');
        li.appendChild(el('span', 'device', deviceText(d.device)));
        li.appendChild(el('span', 'age', t('minutesAgo')(d.minutes)));
        list.appendChild(li);
      }
    } else {
      box.dataset.state = 'ok';
      $('band-headline').textContent =
        b.relevant_devices > 0 ? t('bandOk')(b.relevant_devices) : t('bandNone');
    }
  }

  function renderChart(s) {
    const svg = $('chart');
    const ns = 'http://www.w3.org/2000/svg';
    for (const n of Array.from(svg.childNodes)) {
      if (n.nodeName !== 'title') svg.removeChild(n);
    }
    const buckets = s.arrivals.buckets;
    $('chart-empty').hidden = buckets.length > 0;
    svg.classList.toggle('is-empty', buckets.length === 0);
    if (buckets.length === 0) return;
    // Drawn in the element's own pixels so that text keeps its size on a phone.
    const W = Math.max(200, Math.round(svg.clientWidth || 640));
    const H = Math.max(120, Math.round(svg.clientHeight || 200));
    svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
    const left = 34, bottom = 22, top = 14, right = 8;
    const plotW = W - left - right, plotH = H - top - bottom;
    const maxCount = Math.max(1, ...buckets.map((b) => b.count));
    const maxTotal = Math.max(1, buckets[buckets.length - 1].cumulative);
    // At least two hours wide, so that a few bars do not fill the chart.
    const step = plotW / Math.max(buckets.length, 12);
    const mk = (tag, attrs) => {
      const e = document.createElementNS(ns, tag);
      for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
      svg.appendChild(e);
      return e;
    };
    mk('line', { x1: left, y1: top + plotH, x2: W - right, y2: top + plotH, class: 'axis' });
    buckets.forEach((b, i) => {
      const h = (b.count / maxCount) * plotH;
      const bar = mk('rect', {
        x: left + i * step + step * 0.1, y: top + plotH - h,
        width: Math.max(1, step * 0.8), height: h, class: 'bar',
      });
      const tip = document.createElementNS(ns, 'title');
      tip.textContent = `${clock(b.start, s.utc_offset_minutes)} +${b.count} (${t('cumulative')} ${b.cumulative})`;
      bar.appendChild(tip);
    });
    const points = buckets.map((b, i) =>
      `${(left + (i + 1) * step).toFixed(1)},${(top + plotH - (b.cumulative / maxTotal) * plotH).toFixed(1)}`);
    points.unshift(`${left},${top + plotH}`);
    mk('polyline', { points: points.join(' '), class: 'cumulative' });
    const labelEvery = Math.max(1, Math.ceil(44 / step)); // a label needs about 44 px
    buckets.forEach((b, i) => {
      if (i % labelEvery !== 0) return;
      const tx = mk('text', { x: left + i * step, y: H - 6, class: 'tick' });
      tx.textContent = clock(b.start, s.utc_offset_minutes);
    });
    const yMax = mk('text', { x: left - 4, y: top + 10, class: 'tick y' });
    yMax.textContent = String(maxCount);
    const yTotal = mk('text', { x: W - right - 2, y: top + 10, class: 'tick total' });
    yTotal.textContent = `${t('cumulative')} ${maxTotal}`;
  }

  function renderSlots(s) {
    const root = $('slots');
    clear(root);
    const any = s.slots.some((x) => x.bookings.length > 0);
    $('slots-empty').hidden = any;
    for (const slot of s.slots) {
      const box = el('div', 'slot');
      const head = el('div', 'slot-head');
      head.appendChild(el('span', 'slot-label', slot.label || '—'));
      head.appendChild(el('span', 'slot-time',
        `${clock(slot.start, s.utc_offset_minutes)}–${clock(slot.end, s.utc_offset_minutes)}`));
      head.appendChild(el('span', 'slot-cap', `${t('capacity')} ${slot.capacity}`));
      head.appendChild(el('span', 'slot-count',
        `${t('arrived')} ${slot.totals.arrived}/${slot.totals.expected} · ${t('inside')} ${slot.totals.inside}`));
      box.appendChild(head);
      for (const b of slot.bookings) {
        const card = el('div', `booking status-${b.status}`);
        card.dataset.doc = b.doc_id;
        const top = el('div', 'booking-head');
        top.appendChild(el('span', 'school', b.school_name || b.school_id.slice(-6)));
        top.appendChild(el('span', 'status', (t('statusName')[b.status] || b.status) +
          (b.wait_position ? ` #${b.wait_position}` : '')));
        card.appendChild(top);
        const nums = el('div', 'booking-nums');
        const num = (label, value, cls) => {
          const n = el('span', `num ${cls || ''}`);
          n.appendChild(el('span', 'num-label', label));
          n.appendChild(el('span', 'num-value', value));
          nums.appendChild(n);
        };
        num(t('party'), b.party_size);
        num(t('expected'), b.expected);
        num(t('arrived'), b.arrived, 'arrived');
        num(t('inside'), b.inside);
        num(t('missing'), b.missing.length, b.missing.length ? 'missing' : '');
        card.appendChild(nums);
        if (b.missing.length > 0) {
          const det = el('details', 'missing-list');
          if (b.missing.length <= 12) det.open = true;
          det.appendChild(el('summary', null, `${t('missing-list')} (${b.missing.length})`));
          const ul = el('ul', 'names');
          for (const p of b.missing) ul.appendChild(el('li', p.named ? 'named' : 'pseudonym', p.label));
          det.appendChild(ul);
          card.appendChild(det);
        } else if (b.expected > 0) {
          card.appendChild(el('p', 'all-here', t('all-here')));
        }
        box.appendChild(card);
      }
      root.appendChild(box);
    }
  }

  function renderLedger(s) {
    const body = $('ledger').tBodies[0];
    clear(body);
    $('ledger-empty').hidden = s.duplicates.length > 0;
    $('ledger').hidden = s.duplicates.length === 0;
    for (const d of s.duplicates) {
      const tr = el('tr');
      tr.appendChild(el('td', d.pupil.named ? 'named' : 'pseudonym', d.pupil.label));
      tr.appendChild(el('td', null, d.school_name));
      const td = el('td', 'scans');
      for (const sc of d.scans) {
        const line = el('div', sc.counted ? 'scan counted' : 'scan duplicate');
        line.appendChild(el('span', 'when', clock(sc.at, s.utc_offset_minutes, true)));
        line.appendChild(el('span', 'device', deviceText(sc.device)));
        line.appendChild(el('span', 'how', t('method')[sc.method] || sc.method));
        line.appendChild(el('span', 'mark', sc.counted ? t('counted') : t('duplicate')));
        td.appendChild(line);
      }
      tr.appendChild(td);
      body.appendChild(tr);
    }
  }

  function renderAnomalies(s) {
    const body = $('anomalies').tBodies[0];
    clear(body);
    $('anomalies-empty').hidden = s.anomalies.length > 0;
    $('anomalies').hidden = s.anomalies.length === 0;
    for (const a of s.anomalies) {
      const tr = el('tr', `kind-${a.kind}`);
      tr.appendChild(el('td', 'when', clock(a.at, s.utc_offset_minutes, true)));
      tr.appendChild(el('td', 'kind', t('kindName')[a.kind] || a.kind));
      tr.appendChild(el('td', a.pupil.named ? 'named' : 'pseudonym', a.pupil.label));
      tr.appendChild(el('td', null, a.school_name));
      tr.appendChild(el('td', 'device', deviceText(a.device)));
      body.appendChild(tr);
    }
  }

  function render(s) {
    last = s;
    $('venue-name').textContent = s.venue_name;
    $('day').textContent = s.day;
    document.title = `${t('title')} · ${s.venue_name}`;
    const low = s.band.counts_are_lower_bounds;
    setTotal('expected', s.totals.expected, false);
    setTotal('arrived', s.totals.arrived, low);
    setTotal('inside', s.totals.inside, low);
    setTotal('missing', s.totals.missing, false);
    renderBand(s);
    renderChart(s);
    renderSlots(s);
    renderLedger(s);
    renderAnomalies(s);
    $('updated').textContent = clock(s.generated_at, s.utc_offset_minutes, true);
    document.body.dataset.generatedAt = String(s.generated_at);
  }

  let source = null;
  let retryTimer = null;

  function streamUrl() {
    return `/api/venues/${venue}/live/events${day ? '?day=' + encodeURIComponent(day) : ''}`;
  }

  function connect() {
    if (retryTimer) {
      clearTimeout(retryTimer);
      retryTimer = null;
    }
    source = new EventSource(streamUrl());
    source.addEventListener('open', () => showConnection('live'));
    source.addEventListener('snapshot', (e) => {
      showConnection('live');
      try {
        render(JSON.parse(e.data));
      } catch (err) {
        console.error('bad snapshot', err);
      }
    });
    source.addEventListener('error', () => {
      showConnection('lost');
      // The browser retries by itself while the stream is merely interrupted; when it
      // gives up (an error status), find out why and try again later.
      if (source.readyState === EventSource.CLOSED) {
        source.close();
        fetch(`/api/venues/${venue}/live${day ? '?day=' + encodeURIComponent(day) : ''}`,
          { credentials: 'same-origin', cache: 'no-store' })
          .then((r) => {
            if (r.status === 401) {
              window.location.assign(`/login?next=${encodeURIComponent(window.location.pathname + window.location.search)}`);
            }
          })
          .catch(() => {})
          .finally(() => { retryTimer = setTimeout(connect, 3000); });
      }
    });
  }

  // An edge box (ADR 0150): keep the banner saying how long the upstream is cut off.
  const edgeBanner = $('edge-banner');
  if (edgeBanner) {
    const refreshEdge = () => {
      fetch('/api/edge/status', { credentials: 'same-origin', cache: 'no-store' })
        .then((r) => (r.ok ? r.json() : null))
        .then((st) => {
          if (!st) return;
          edgeBanner.textContent = st.banner;
          edgeBanner.hidden = st.banner === '';
        })
        .catch(() => {});
    };
    setInterval(refreshEdge, 15000);
  }

  // The switch is a link to the page in the other language; here it switches in place.
  $('lang').addEventListener('click', (event) => {
    event.preventDefault();
    lang = lang === 'zh' ? 'en' : 'zh';
    const u = new URL(window.location.href);
    u.searchParams.set('lang', lang);
    window.history.replaceState(null, '', u.toString());
    applyLanguage();
  });

  let resizeTimer = null;
  window.addEventListener('resize', () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => { if (last) renderChart(last); }, 100);
  });

  applyLanguage();
  if (venue) {
    connect();
  } else {
    showConnection('lost');
  }
})();
