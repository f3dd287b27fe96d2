// A small offline renderer of /openapi.json: one section per endpoint (no CDN, no Swagger UI).
"use strict";

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, attrs);
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

function schemaText(schema, spec) {
  if (!schema) return "";
  if (schema.$ref) {
    const name = schema.$ref.split("/").pop();
    const target = spec.components?.schemas?.[name];
    if (!target?.properties) return name;
    const fields = Object.entries(target.properties).map(([key, value]) => `${key}: ${schemaText(value, spec)}`);
    return `${name} { ${fields.join(", ")} }`;
  }
  if (schema.type === "array") return `${schemaText(schema.items, spec)}[]`;
  if (schema.anyOf) return schema.anyOf.map((s) => schemaText(s, spec)).join(" | ");
  return schema.format === "binary" ? "file" : schema.type || "object";
}

function endpoint(path, method, operation, spec) {
  const host = location.origin;
  const section = el("section", { className: "endpoint" },
    el("h2", {}, el("span", { className: `method ${method}`, textContent: method.toUpperCase() }),
      el("code", { textContent: path })),
    el("p", { className: "summary-line", textContent: operation.summary || "" }),
    operation.description ? el("p", { className: "muted", textContent: operation.description }) : null);
  const body = operation.requestBody?.content;
  if (body) {
    const list = el("ul", { className: "plain" });
    for (const [type, media] of Object.entries(body)) {
      list.append(el("li", {}, el("code", { textContent: type }), ` ${schemaText(media.schema, spec)}`,
        media.description ? ` (${media.description})` : ""));
    }
    section.append(el("h3", { textContent: "Request body" }), list);
  }
  const responses = el("ul", { className: "plain" });
  for (const [code, response] of Object.entries(operation.responses || {})) {
    const json = response.content?.["application/json"]?.schema;
    responses.append(el("li", {}, el("code", { className: `status s${code[0]}`, textContent: code }),
      ` ${response.description || ""}`, json ? el("span", { className: "muted", textContent: ` → ${schemaText(json, spec)}` }) : null));
  }
  section.append(el("h3", { textContent: "Responses" }), responses);
  if (method === "get") {
    section.append(el("p", {}, el("a", { href: host + path, textContent: `Open ${path}` })));
  }
  return section;
}

async function render() {
  const target = document.getElementById("endpoints");
  try {
    const spec = await (await fetch("/openapi.json")).json();
    document.getElementById("title").textContent = `${spec.info.title} API ${spec.info.version}`;
    document.querySelector(".example code").textContent =
      document.querySelector(".example code").textContent.replaceAll("http://HOST", location.origin);
    target.replaceChildren();
    for (const [path, methods] of Object.entries(spec.paths)) {
      for (const [method, operation] of Object.entries(methods)) target.append(endpoint(path, method, operation, spec));
    }
  } catch (error) {
    target.textContent = `Could not load /openapi.json: ${error.message}`;
  }
}

render();
