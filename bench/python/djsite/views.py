"""Two views as a small site has them: a rendered template and a JSON record."""
from django.http import Http404, JsonResponse
from django.shortcuts import render

ITEMS = {i: {"id": i, "name": f"item {i}", "price_cents": 100 * i, "tags": ["bench"]} for i in range(1, 51)}


def index(request):
    return render(request, "djsite/index.html", {"items": list(ITEMS.values())[:10]})


def item(request, item_id):
    found = ITEMS.get(item_id)
    if found is None:
        raise Http404("no such item")
    return JsonResponse(found)
