// The DMCA notice form (GET /dmca): builds the JSON body of POST /v1/dmca/notices and shows the
// answer; a 422 marks every field it names (`error.fields`).
"use strict";

const form = document.getElementById("notice");
const result = document.getElementById("result");

function body() {
  const value = (name) => form.elements[name].value.trim();
  const optional = (name) => value(name) || null;
  return {
    copyrighted_work: value("copyrighted_work"),
    infringing_urls: value("infringing_urls").split(/\s+/).filter(Boolean),
    complainant: {name: value("complainant.name"), email: value("complainant.email"),
                  address: optional("complainant.address"), phone: optional("complainant.phone")},
    good_faith_statement: form.elements.good_faith_statement.checked,
    accuracy_statement: form.elements.accuracy_statement.checked,
    signature: value("signature"),
  };
}

function mark(fields) {
  for (const element of form.elements) element.classList.remove("invalid");
  for (const field of fields) {
    const name = field.startsWith("infringing_urls") ? "infringing_urls" : field;
    const element = form.elements[name];
    if (element && element.classList) element.classList.add("invalid");
  }
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  result.dataset.state = "sending";
  result.textContent = "sending...";
  try {
    const response = await fetch("/v1/dmca/notices", {method: "POST", headers: {"Content-Type": "application/json"},
                                                      body: JSON.stringify(body())});
    const answer = await response.json();
    if (response.ok) {
      mark([]);
      result.dataset.state = "ok";
      result.textContent = `Notice ${answer.notice_id} received for ${answer.video_ids.length} video(s).`;
    } else {
      mark(answer.error.fields || (answer.error.field ? [answer.error.field] : []));
      result.dataset.state = "error";
      result.textContent = answer.error.message;
    }
  } catch (error) {
    result.dataset.state = "error";
    result.textContent = `The notice could not be sent: ${error}`;
  }
});
