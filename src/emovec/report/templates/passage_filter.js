document.addEventListener("DOMContentLoaded", function () {
  var box = document.getElementById("passage-filter");
  if (!box) { return; }
  box.addEventListener("input", function () {
    var q = box.value.trim().toLowerCase();
    document.querySelectorAll("details.passages").forEach(function (d) {
      var hit = !q || d.dataset.emotion.indexOf(q) !== -1;
      d.style.display = hit ? "" : "none";
      if (q && hit) { d.open = true; }
    });
  });
});
