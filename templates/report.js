// Click a figure to see it larger (Esc or a click closes it); print every collapsed block open.
const zoom = document.getElementById("zoom");
document.querySelector("main").addEventListener("click", (event) => {
  const small = event.target.closest("img");
  if (!small || !zoom.showModal) return;
  const large = zoom.querySelector("img") || zoom.insertBefore(document.createElement("img"),
                                                               zoom.firstChild);
  large.src = small.src;
  large.alt = small.alt;
  large.className = small.naturalWidth < 300 ? "pixels" : "";  // small images: show the pixels
  const caption = small.closest("figure")?.querySelector("figcaption");
  zoom.querySelector("p").textContent = caption ? caption.textContent : small.alt;
  zoom.showModal();
});
zoom.addEventListener("click", () => zoom.close());
let closed = [];
addEventListener("beforeprint", () => {
  closed = [...document.querySelectorAll("details:not([open])")];
  closed.forEach((d) => { d.open = true; });
});
addEventListener("afterprint", () => closed.forEach((d) => { d.open = false; }));
