const D = JSON.parse(document.getElementById("data").textContent);
const spans = document.querySelectorAll('#tokens span'), tip = document.getElementById('tip');
const emo = document.getElementById('emotion'), lay = document.getElementById('layer');
function paint() {
  const e = +emo.value, l = +lay.value, s = D.scale[l];
  document.getElementById('scale').textContent = '1 = ' + s.toFixed(4);
  spans.forEach((sp, i) => {
    const v = Math.max(-1, Math.min(1, D.scores[i][l][e] / s));
    sp.style.background = v >= 0 ? 'rgba(220,40,40,' + v + ')' : 'rgba(40,90,220,' + (-v) + ')';
  });
}
function show(ev) {
  const i = +ev.target.dataset.i, l = +lay.value, e = +emo.value, row = D.scores[i][l];
  const order = row.map((v, j) => j).sort((a, b) => row[b] - row[a]).slice(0, 6);
  const fmt = v => (v >= 0 ? '+' : '') + v.toFixed(4);
  tip.textContent = 'token ' + i + ' ' + JSON.stringify(D.tokens[i]) + '\n' + D.emotions[e] + ' ' + fmt(row[e]) +
    '\n\ntop:\n' + order.map(j => D.emotions[j] + ' ' + fmt(row[j])).join('\n');
  tip.style.display = 'block';
  tip.style.left = Math.min(ev.clientX + 12, window.innerWidth - 260) + 'px';
  tip.style.top = (ev.clientY + 14) + 'px';
}
spans.forEach(sp => { sp.addEventListener('mousemove', show); sp.addEventListener('mouseleave', () => tip.style.display = 'none'); });
emo.addEventListener('change', paint); lay.addEventListener('change', paint);
paint();
