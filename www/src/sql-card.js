// The "Write from SQL" card: the exact psql command for this machine's database, read from
// /demo-config.json (written by scripts/demo next to the site), with a copy button.

const EXAMPLE = "insert into demo_tasks (title)\n      values ('Hello from SQL')";

export class SqlCard {
  constructor() {
    this.pre = document.getElementById("sql-insert");
    this.show("psql postgres://postgres@127.0.0.1:PORT/tidewire");
    fetch("/demo-config.json")
      .then((response) => (response.ok ? response.json() : null))
      .then((config) => {
        if (config && typeof config.psql === "string") this.show(config.psql);
      })
      .catch(() => {});
    for (const copy of document.querySelectorAll("[data-copy]")) {
      copy.addEventListener("click", async () => {
        const text = document.getElementById(copy.dataset.copy).textContent;
        try {
          await navigator.clipboard.writeText(text);
          copy.textContent = "Copied";
        } catch {
          // No clipboard permission (plain http on another host): select the text instead.
          const range = document.createRange();
          range.selectNodeContents(document.getElementById(copy.dataset.copy));
          getSelection().removeAllRanges();
          getSelection().addRange(range);
          copy.textContent = "Selected";
        }
        setTimeout(() => (copy.textContent = "Copy"), 1500);
      });
    }
  }

  show(psql) {
    this.pre.textContent = `${psql} \\\n  -c "${EXAMPLE}"`;
  }
}
